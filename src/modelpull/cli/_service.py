"""``modelpull serve``, ``modelpull list`` and ``modelpull rm``.

Their place options (``--cache-dir``, ``--ollama-host``, ...) are the sources'
declared settings: a new source's folder shows up here by itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from .._format import format_bytes
from ..api import SOURCES, Location
from ..errors import ModelpullError
from ._main import fail, main

F = TypeVar("F", bound=Callable[..., Any])


def _location_options(serving: bool) -> Callable[[F], F]:
    """One option per declared setting (``serve`` also gets source addresses)."""
    locations = [loc for loc in SOURCES.locations() if serving or not loc.serve_only]

    def decorate(fn: F) -> F:
        for location in reversed(locations):
            kind = None if location.is_url else click.Path(file_okay=False)
            fn = click.option(location.flag, location.name, type=kind, help=location.help)(fn)
        return fn

    return decorate


def _inventory_settings(values: dict[str, Any]) -> dict[str, Any]:
    by_name: dict[str, Location] = {loc.name: loc for loc in SOURCES.locations()}
    return {by_name[name].key: value for name, value in values.items() if value and name in by_name}


def _listable() -> str:
    return ", ".join(s.name for s in SOURCES.by_rank() if s.place is not None)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; anything but loopback needs an API key.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key", envvar="MODELPULL_API_KEY", help="Require 'Authorization: Bearer <key>' on every API call (or MODELPULL_API_KEY).")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser calls from this origin (repeatable); closed by default.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, help="Host header to accept (repeatable; default: loopback names).")
@_location_options(serving=True)
@click.option("--allow-client-paths", is_flag=True, help="Let requests choose folders (cache_dir, local_dir, ...).")
@click.option("--keep-finished", default=3600.0, show_default=True, help="Seconds a finished job stays listed.")
@click.option("--max-running", default=32, show_default=True, type=click.IntRange(1, 1000), help="Downloads running at once.")
@click.option("--limit-rate", metavar="RATE", help="Bandwidth cap shared by every job, bytes/s: 20M = 20 MB/s, 500k, 20Mi = 20 MiB/s (PUT /settings changes it while jobs run).")
@click.option("--data-dir", envvar="MODELPULL_DATA_DIR", type=click.Path(file_okay=False),
              help="Folder of the journal that lets jobs outlive the service (or MODELPULL_DATA_DIR; "
                   "default: ~/.local/share/modelpull/service, under XDG_DATA_HOME when set).")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(
    host: str, port: int, api_key: str | None, cors_origins: tuple[str, ...], allowed_hosts: tuple[str, ...],
    allow_client_paths: bool, keep_finished: float, max_running: int, data_dir: str | None, log_level: str,
    limit_rate: str | None = None, **settings: str | None,
) -> None:
    """Run the download service and its web page (http://127.0.0.1:8000)."""
    try:
        import uvicorn  # noqa: F401

        from ..service import ConfigError, ServiceConfig, run
        from ..service._journal import Journal, JournalError, default_data_dir
    except ImportError:
        raise click.ClickException(
            "the service needs FastAPI and uvicorn: pip install 'modelpull[service]'"
        ) from None
    values: dict[str, Any] = dict(
        host=host, port=port, api_key=api_key or None, cors_origins=list(cors_origins),
        allowed_hosts=list(allowed_hosts), allow_client_paths=allow_client_paths,
        keep_finished=keep_finished, max_running=max_running, data_dir=data_dir or None, **settings,
    )
    if not data_dir:
        # The default folder is a convenience: when it cannot be used (read-only home, another
        # service on it), serve without a journal rather than not at all. A chosen one must work.
        try:
            Journal(default_data_dir()).check()
            values["data_dir"] = default_data_dir()
        except JournalError as exc:
            click.echo(f"warning: jobs will not outlive this service: {exc}", err=True)
    try:
        config = ServiceConfig(**values, max_speed=limit_rate)
        config.check()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"modelpull service on http://{shown}:{port}/ (API under /api/models)", err=True)
    run(config, log_level=log_level)


@main.command("list")
@click.argument("provider", required=False)
@_location_options(serving=False)
@click.option("--partial", is_flag=True, help="List unfinished downloads kept for resume instead of models.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(provider: str | None, partial: bool, as_json: bool, **settings: str | None) -> None:
    """List downloaded models (of PROVIDER, or of every source)."""
    if partial:
        _list_partials(provider, as_json, _inventory_settings(settings))
        return
    from ..inventory import scan_inventory

    try:
        inventory = scan_inventory(provider, **_inventory_settings(settings))
    except ModelpullError as exc:
        fail(exc.code, exc.message)
    if as_json:
        click.echo(json.dumps({"models": [m.to_dict() for m in inventory.models], "notes": inventory.notes}))
        return
    if not inventory.models:
        click.echo("no models found")
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False)
        for column in ("provider", "model", "kind", "size", "modified", "where"):
            table.add_column(column, justify="right" if column == "size" else "left")
        for model in inventory.models:
            size = format_bytes(model.size_bytes)
            if model.partial_bytes:
                size += f" (+{format_bytes(model.partial_bytes)} partial)"
            if model.shared_bytes:
                size += f" ({format_bytes(model.shared_bytes)} shared)"
            modified = datetime.fromtimestamp(model.modified).strftime("%Y-%m-%d %H:%M") if model.modified else ""
            cells = (model.provider, model.name, model.kind, size, modified, model.path or model.where)
            table.add_row(*(Text(cell) for cell in cells))  # literally: a [bracket] is no markup
        # piped: one line per model, never wrapped or cut at 80 columns
        Console(soft_wrap=True, width=None if sys.stdout.isatty() else 100_000).print(table)
    for note in inventory.notes:
        click.echo(f"note: {note}", err=True)


def _list_partials(provider: str | None, as_json: bool, settings: dict[str, Any]) -> None:
    from ..inventory import list_partials

    try:
        partials = list_partials(provider, **settings)
    except ModelpullError as exc:
        raise click.ClickException(f"[{exc.code}] {exc.message}") from None
    if as_json:
        click.echo(json.dumps({"partials": [p.to_dict() for p in partials]}))
        return
    if not partials:
        click.echo("no partial downloads")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for column in ("provider", "model", "file", "on disk", "last activity", "path"):
        table.add_column(column, justify="right" if column == "on disk" else "left")
    for p in partials:
        done = format_bytes(p.present_bytes)
        if p.total_bytes:
            done += f" / {format_bytes(p.total_bytes)} ({100 * p.present_bytes / p.total_bytes:.0f} %)"
        when = datetime.fromtimestamp(p.modified).strftime("%Y-%m-%d %H:%M")
        model = p.model + ("" if p.left_by == "modelpull" else f" (left by {p.left_by})")
        table.add_row(*(Text(cell) for cell in (p.provider, model, p.file, done, when, p.path)))
    # piped: one line per partial, never wrapped or cut at 80 columns
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 100_000).print(table)
    click.echo("Pull the same model again to resume; `modelpull rm --partial PROVIDER MODEL` discards.", err=True)


list_command.help = f"List downloaded models of PROVIDER ({_listable()}; all by default)."


@main.command("rm")
@click.argument("provider", required=False)
@click.argument("model", required=False)
@_location_options(serving=False)
@click.option("--partial", is_flag=True, help="Discard unfinished downloads (of MODEL, of PROVIDER, or --all).")
@click.option("--all", "everything", is_flag=True, help="With --partial: every unfinished download.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm_command(provider: str | None, model: str | None, partial: bool, everything: bool, yes: bool,
               **settings: str | None) -> None:
    """Delete a downloaded MODEL of PROVIDER."""
    if partial:
        _discard_partials(provider, model, everything, yes, _inventory_settings(settings))
        return
    if not provider or not model:
        raise click.UsageError("name the PROVIDER and the MODEL to delete (or use --partial)")
    from ..inventory import delete_model

    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete {provider} model {model}?", abort=True)
    try:
        result = delete_model(provider, model, **_inventory_settings(settings))
    except ModelpullError as exc:
        fail(exc.code, exc.message)
    click.echo(f"deleted {result['name']} ({format_bytes(result['freed_bytes'])} freed)")


def _discard_partials(provider: str | None, model: str | None, everything: bool, yes: bool,
                      settings: dict[str, Any]) -> None:
    from ..inventory import discard_partials

    if not (provider or everything):
        raise click.UsageError("name PROVIDER [MODEL] whose partial downloads to discard, or pass --all")
    what = "every partial download" if not provider else f"the partial downloads of {provider} {model or ''}"
    if not yes and sys.stdin.isatty():
        click.confirm(f"Discard {what.strip()}?", abort=True)
    try:
        gone = discard_partials(provider, model, **settings)
    except ModelpullError as exc:
        raise click.ClickException(f"[{exc.code}] {exc.message}") from None
    freed = sum(p.present_bytes for p in gone)
    click.echo(f"discarded {len(gone)} partial file{'s' if len(gone) != 1 else ''} ({format_bytes(freed)} freed)")


rm_command.help = f"Delete a downloaded MODEL of PROVIDER ({_listable()})."
