"""The ``modelpull`` command group; each command lives in a module of its own.

Every command reports an error the same way: ``error [code]: message`` on
stderr (the message exactly as written), exit status 1; a command line that
cannot be read (a missing argument, an unknown flag) too, as ``invalid_option``
with exit status 2 (click's and the shells' usage status).
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from typing import Any

import click

from .. import __version__
from ..api import SOURCES
from ..progress import DownloadProgress, DownloadStatus

#: exit status after Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED = 130


def sources_help() -> str:
    """Every source with a one-line summary and an example, for ``--help``."""
    lines = ["\b", "Sources (PROVIDER), the common ones first:"]
    for source in SOURCES.by_rank():
        alias = f" (or {', '.join(source.aliases)})" if source.aliases else ""
        lines.extend(textwrap.wrap(f"{source.name}{alias}: {source.summary}", 76,
                                   initial_indent="  ", subsequent_indent="      "))
        lines.append(f"      e.g. modelpull pull {source.name} {source.example}")
    return "\n".join(lines)


#: the library's words for its arguments, and what they are called on the command line
_SHELL_WORDS = (
    (re.compile(r"token=\.\.\. \(or --token\)"), "--token"),
    (re.compile(r"\btoken=\.\.\."), "--token"),
    (re.compile(r"(?<![-\w])base_url\b"), "--base-url"),
)


def for_the_shell(message: str) -> str:
    """A library message as a command-line user reads it (``--token``, not ``token=...``)."""
    for pattern, replacement in _SHELL_WORDS:
        message = pattern.sub(replacement, message)
    return message


def print_error(code: str | None, message: str) -> None:
    """The one error format of every command: ``error [code]: message`` on stderr."""
    label = click.style("error", fg="red", bold=True)
    click.echo(f"{label} [{code or 'error'}]: {for_the_shell(message)}", err=True)


def fail(code: str | None, message: str) -> None:
    """Print the error and exit 1."""
    print_error(code, message)
    raise SystemExit(1)


def error_event(code: str, message: str) -> DownloadProgress:
    """An ``ERROR`` event for ``--json`` output of an error found outside a download."""
    return DownloadProgress(DownloadStatus.ERROR, message, error_code=code)


#: exit status of a command line that cannot be read
USAGE = 2


class _Commands(click.Group):
    """The command group; click's own usage errors come out in the one error format."""

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            status = super().main(argv, *rest, **{**kwargs, "standalone_mode": False})
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:  # a bare command
                click.echo(exc.ctx.get_help())
                sys.exit(USAGE)
            command = exc.ctx.command_path if exc.ctx is not None else "modelpull"
            message = f"{exc.format_message()} (see '{command} --help')"
            if "--json" in argv:
                click.echo(json.dumps(error_event("invalid_option", message).to_dict()))
            else:
                print_error("invalid_option", message)
            sys.exit(USAGE)
        except click.ClickException as exc:
            print_error(None, exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:  # Ctrl-C that no command caught
            sys.exit(INTERRUPTED)
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]}, epilog=sources_help())
@click.version_option(__version__, prog_name="modelpull")
def main() -> None:
    """Download AI models from Hugging Face, MLX repos, GGUF repos and Ollama with honest progress."""
