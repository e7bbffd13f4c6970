"""``modelpull pull``: a progress bar, ``--json`` or ``--dry-run``."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from .._format import format_bytes
from ..api import download_model, plan_download
from ..errors import ModelpullError
from ..progress import DownloadProgress, DownloadStatus
from ._main import main, sources_help


def _parse_option(raw: tuple[str, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--option")
        if "," in value and key.endswith("_patterns"):
            options[key] = [v for v in value.split(",") if v]
        else:
            options[key] = value
    return options


@main.command(epilog=sources_help())
@click.argument("provider")
@click.argument("model")
@click.option("--token", envvar="MODELPULL_TOKEN", help="Access token (or MODELPULL_TOKEN; HF_TOKEN works for the Hub).")
@click.option("--base-url", help="Source address: Hub endpoint, Ollama server or registry mirror.")
@click.option("--revision", help="Hub branch, tag or commit.")
@click.option("--include", "allow_patterns", multiple=True, help="Glob of files to fetch (repeatable).")
@click.option("--exclude", "ignore_patterns", multiple=True, help="Glob of files to skip (repeatable).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Hugging Face cache folder.")
@click.option("--local-dir", type=click.Path(file_okay=False), help="Put Hub files straight into this folder.")
@click.option("--option", "-o", "raw_options", multiple=True, metavar="KEY=VALUE", help="Any other provider option.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON event per line.")
@click.option("--dry-run", is_flag=True, help="Print the plan (files or layers, sizes) and download nothing.")
@click.option("--offline", is_flag=True, help="No network at all: use the copy on disk, or say what is missing (HF_HUB_OFFLINE=1 does the same for the Hub sources).")
def pull(
    provider: str,
    model: str,
    token: str | None,
    base_url: str | None,
    revision: str | None,
    allow_patterns: tuple[str, ...],
    ignore_patterns: tuple[str, ...],
    cache_dir: str | None,
    local_dir: str | None,
    raw_options: tuple[str, ...],
    as_json: bool,
    dry_run: bool,
    offline: bool,
) -> None:
    """Download MODEL from PROVIDER (the sources are listed below)."""
    options = _parse_option(raw_options)
    for key, value in (
        ("revision", revision),
        ("allow_patterns", list(allow_patterns) or None),
        ("ignore_patterns", list(ignore_patterns) or None),
        ("cache_dir", cache_dir),
        ("local_dir", local_dir),
        ("offline", offline),
    ):
        if value:
            options[key] = value
    if dry_run:
        sys.exit(_dry_run(provider, model, token, base_url, options, as_json))
    sys.exit(asyncio.run(_pull(provider, model, token, base_url, options, as_json)))


def _dry_run(provider: str, model: str, token: str | None, base_url: str | None,
             options: dict[str, Any], as_json: bool) -> int:
    try:
        plan = asyncio.run(plan_download(provider, model, token=token, base_url=base_url, **options))
    except ModelpullError as exc:
        if as_json:
            click.echo(json.dumps({"status": "error", "error_code": exc.code, "message": exc.message}))
        else:
            click.echo(f"error [{exc.code}]: {exc.message}", err=True)
        return 1
    if as_json:
        click.echo(json.dumps(plan.to_dict()))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{plan.provider}: {plan.model}" + (f" @ {plan.revision[:12]}" if plan.revision else ""))
    table.add_column("file or layer")
    table.add_column("size", justify="right")
    table.add_column("local", justify="right")
    for item in plan.items:
        state = "yes" if item.local else (format_bytes(item.present_bytes) if item.present_bytes else "")
        table.add_row(item.name, format_bytes(item.size), state)
    console.print(table)
    console.print(f"total {format_bytes(plan.total_bytes)}, to fetch {format_bytes(plan.missing_bytes)}")
    for note in plan.notes:
        console.print(note)
    if plan.destination:
        console.print(f"destination: {plan.destination}")
    return 0


async def _pull(provider: str, model: str, token: str | None, base_url: str | None,
                options: dict[str, Any], as_json: bool) -> int:
    events = download_model(provider, model, token=token, base_url=base_url, **options)
    if as_json or not sys.stdout.isatty():
        return await _pull_plain(events, as_json)
    return await _pull_rich(events)


async def _pull_plain(events: Any, as_json: bool) -> int:
    last: DownloadProgress | None = None
    async for event in events:
        last = event
        if as_json:
            click.echo(json.dumps(event.to_dict()))
        elif event.status in (DownloadStatus.STARTING, DownloadStatus.COMPLETE):
            click.echo(event.message)
        elif event.status is DownloadStatus.ERROR:
            click.echo(f"error [{event.error_code}]: {event.message}", err=True)
    return 0 if last is not None and last.status is DownloadStatus.COMPLETE else 1


async def _pull_rich(events: Any) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=False)
    last: DownloadProgress | None = None
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}"),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("starting", total=None, current="")
        async for event in events:
            last = event
            if event.status is DownloadStatus.ERROR:
                break
            bar.update(
                task,
                description=event.status.value,
                total=event.total_bytes,
                completed=event.downloaded_bytes or 0,
                current=(event.current or "")[-40:],
            )
    assert last is not None
    if last.status is DownloadStatus.COMPLETE:
        console.print(f"[green]✓[/] {last.message}")
        return 0
    console.print(f"[red]error[/] [{last.error_code}]: {last.message}")
    return 1
