"""``modelpull push``: a model from any source to a registry or an OCI layout, shown like a pull.

The same three outputs as ``pull`` (a bar on a terminal, plain lines in a
log, ``--json``); the sentences speak of the destination. Ctrl-C stops the
push (the chunk in flight is given a moment to finish, so the registry can
continue the upload), says so, and exits 130; the same command resumes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator
from typing import Any, cast

import click

from ..errors import ModelpullError
from ..progress import DownloadProgress
from ._main import INTERRUPTED, main, sources_help
from ._pull import (
    _choose_view,
    _JsonView,
    _parse_option,
    _PlainView,
    _refused,
    _RichView,
    _View,
    show_events,
)


class _PushWords(_View):
    """What the numbers mean when they count bytes at the destination."""

    where_present = "already at the destination"
    moving = "sending"
    moved = "moved"
    kept = "is at the destination; nothing was tagged. Run the same command again to resume from there."
    nothing_yet = "Interrupted before any byte was pushed; run the same command again to start."

    def nothing_line(self, event: DownloadProgress) -> str:
        return f"{event.message} (every blob was there already)"


class _PushJson(_PushWords, _JsonView):
    pass


class _PushPlain(_PushWords, _PlainView):
    pass


class _PushRich(_PushWords, _RichView):
    pass


@main.command(name="push", epilog=sources_help())
@click.argument("provider")
@click.argument("model")
@click.argument("destination")
@click.option("--format", "fmt", type=click.Choice(["modelpack", "docker"]), default="modelpack", show_default=True,
              help="CNCF ModelPack, or a Docker Model Runner artifact (config v0.2).")
@click.option("--token", envvar="MODELPULL_PUSH_TOKEN",
              help="Credential for the destination registry: a token or user:password (or MODELPULL_PUSH_TOKEN).")
@click.option("--source-token", envvar="MODELPULL_TOKEN",
              help="Token for the source, when the model must be pulled first (or MODELPULL_TOKEN).")
@click.option("--base-url", help="Source address, when the model must be pulled first (Hub endpoint, registry mirror).")
@click.option("--insecure", is_flag=True, help="Allow plain http to the destination registry.")
@click.option("--option", "-o", "raw_options", multiple=True, metavar="KEY=VALUE",
              help="A source option (revision, cache_dir, models_dir...) or a push option (chunk_size, created...).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON event per line.")
@click.option("--dry-run", is_flag=True, help="Say what would be pulled and pushed; move nothing.")
def push_command(
    provider: str, model: str, destination: str, fmt: str, token: str | None, source_token: str | None,
    base_url: str | None, insecure: bool, raw_options: tuple[str, ...], as_json: bool, dry_run: bool,
) -> None:
    """Publish MODEL from PROVIDER to DESTINATION, an OCI registry or an OCI layout.

    \b
    DESTINATION is one of
      oci://registry[:port]/namespace/name[:tag]   (plain http only with --insecure)
      oci-layout:PATH[:NAME]                        (a folder, or PATH.tar, for a disk across an air gap)

    What the source's store holds is used; what is missing is pulled first.
    Blobs the destination has are skipped; an interrupted upload resumes from
    what the registry holds; the tag is written last.
    """
    options = _parse_option(raw_options)
    if insecure:
        options["insecure"] = True
    if dry_run:
        options["dry_run"] = True
    try:
        from .._push import check_push  # here: a command that pushes nothing never imports it

        check_push(provider, model, destination, format=fmt, token=token, source_token=source_token,
                   base_url=base_url, **options)
    except ModelpullError as exc:
        sys.exit(_refused(exc, as_json))
    try:
        code = asyncio.run(_push(provider, model, destination, fmt, token, source_token, base_url, options, as_json))
    except KeyboardInterrupt:
        code = INTERRUPTED
    sys.exit(code)


async def _push(provider: str, model: str, destination: str, fmt: str, token: str | None,
                source_token: str | None, base_url: str | None, options: dict[str, Any], as_json: bool) -> int:
    from .._push import push

    events = cast(
        "AsyncGenerator[DownloadProgress, None]",
        push(provider, model, destination, format=fmt, token=token, source_token=source_token, base_url=base_url,
             **options),
    )
    return await show_events(events, _choose_view(model, as_json, _PushJson, _PushRich, _PushPlain))
