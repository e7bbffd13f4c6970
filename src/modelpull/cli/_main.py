"""The ``modelpull`` command group; each command lives in a module of its own."""

from __future__ import annotations

import click

from .. import __version__
from ..api import SOURCES


def sources_help() -> str:
    """Every source with a one-line summary and an example, for ``--help``."""
    lines = ["\b", "Sources (PROVIDER):"]
    for source in SOURCES.by_rank():
        alias = f" (or {', '.join(source.aliases)})" if source.aliases else ""
        lines.append(f"  {source.name}{alias}: {source.summary}")
        lines.append(f"      e.g. modelpull pull {source.name} {source.example}")
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=sources_help())
@click.version_option(__version__, prog_name="modelpull")
def main() -> None:
    """Download AI models from Hugging Face, MLX repos, GGUF repos and Ollama with honest progress."""
