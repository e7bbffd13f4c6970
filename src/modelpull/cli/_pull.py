"""``modelpull pull``: a progress bar on a terminal, plain lines in a log, ``--json``, ``--dry-run``.

Every message is printed as it was written (a ``[gated]`` in it is text, not
markup). Invalid input is refused before anything starts. Ctrl-C stops the
transfer, keeps what is on disk, says so, and exits 130 (``--json``: a last
``ERROR`` event ``cancelled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import click

from .._format import format_bytes, format_duration
from ..api import check_download, download_model, plan_download
from ..errors import ModelpullError
from ..progress import DownloadProgress, DownloadStatus
from ._main import INTERRUPTED, error_event, main, print_error, sources_help

#: seconds between two progress lines when stdout is not a terminal
PLAIN_INTERVAL = 3.0


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
@click.option("--limit-rate", metavar="RATE", help="Bandwidth cap for the whole download, bytes/s: 20M = 20 MB/s, 500k, 20Mi = 20 MiB/s.")
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
    limit_rate: str | None,
    raw_options: tuple[str, ...],
    as_json: bool,
    dry_run: bool,
    offline: bool,
) -> None:
    """Download MODEL from PROVIDER (the sources are listed below).

    On a terminal: the plan's first line, then a progress bar. Otherwise: a
    plain progress line every few seconds. Ctrl-C keeps what is on disk; the
    same command resumes from there.
    """
    options = _parse_option(raw_options)
    for key, value in (
        ("revision", revision),
        ("allow_patterns", list(allow_patterns) or None),
        ("ignore_patterns", list(ignore_patterns) or None),
        ("cache_dir", cache_dir),
        ("local_dir", local_dir),
        ("max_speed", limit_rate),
        ("offline", offline),
    ):
        if value:
            options[key] = value
    try:
        check_download(provider, model, token, base_url, **options)
    except ModelpullError as exc:
        sys.exit(_refused(exc, as_json))
    try:
        if dry_run:
            code = asyncio.run(_dry_run(provider, model, token, base_url, options, as_json))
        else:
            code = asyncio.run(_pull(provider, model, token, base_url, options, as_json))
    except KeyboardInterrupt:  # a second Ctrl-C while the first one was being handled
        code = INTERRUPTED
    sys.exit(code)


def _refused(exc: ModelpullError, as_json: bool) -> int:
    if as_json:
        click.echo(json.dumps(error_event(exc.code, exc.message).to_dict()))
    else:
        print_error(exc.code, exc.message)
    return 1


# -- --dry-run -------------------------------------------------------------------------
async def _dry_run(provider: str, model: str, token: str | None, base_url: str | None,
                   options: dict[str, Any], as_json: bool) -> int:
    try:
        plan = await plan_download(provider, model, token=token, base_url=base_url, **options)
    except ModelpullError as exc:
        return _refused(exc, as_json)
    except asyncio.CancelledError:
        click.secho("Interrupted; nothing was downloaded.", err=True, fg="yellow")
        return INTERRUPTED
    if as_json:
        click.echo(json.dumps(plan.to_dict()))
        return 0
    title = f"{plan.provider}: {plan.model}" + (f" @ {plan.revision[:12]}" if plan.revision else "")
    rows = []
    for item in plan.items:
        state = "yes" if item.local else (format_bytes(item.present_bytes) if item.present_bytes else "")
        rows.append((item.name, format_bytes(item.size), state))
    footer = [f"total {format_bytes(plan.total_bytes)}, to fetch {format_bytes(plan.missing_bytes)}", *plan.notes]
    if plan.destination:
        footer.append(f"destination: {plan.destination}")
    if not sys.stdout.isatty():
        click.echo(title)
        width = max([len(name) for name, _, _ in rows] + [13])
        click.echo(f"{'file or layer':<{width}}  {'size':>9}  on disk")
        for name, size, state in rows:
            click.echo(f"{name:<{width}}  {size:>9}  {state}".rstrip())
        for line in footer:
            click.echo(line)
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, emoji=False)
    table = Table(title=Text(title))
    table.add_column("file or layer", overflow="fold")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("on disk", justify="right", no_wrap=True)
    for name, size, state in rows:
        table.add_row(Text(name), Text(size), Text(state))
    console.print(table)
    if plan.quantizations:
        choices = Table(title=Text("quantizations (pick one: MODEL:QUANT)"), box=None)
        for column in ("", "quantization", "size", "with projector", ""):
            choices.add_column(column, justify="right" if column.endswith(("size", "projector")) else "left")
        for q in plan.quantizations:
            mark = Text("▶", style="bold green") if q.chosen else Text("")
            projector = format_bytes(q.size + q.projector_size) if q.projector else ""
            choices.add_row(mark, Text(q.name), Text(format_bytes(q.size)), Text(projector),
                            Text("default" if q.default else "", style="dim"))
        console.print(choices)
        footer = [line for line in footer if not line.startswith("Quantizations: ")]
    for line in footer:
        console.print(Text(line), soft_wrap=True)
    return 0


# -- the download ----------------------------------------------------------------------
async def _pull(provider: str, model: str, token: str | None, base_url: str | None,
                options: dict[str, Any], as_json: bool) -> int:
    events = cast(
        "AsyncGenerator[DownloadProgress, None]",
        download_model(provider, model, token=token, base_url=base_url, **options),
    )
    return await show_events(events, _choose_view(model, as_json, _JsonView, _RichView, _PlainView))


def _choose_view(model: str, as_json: bool, json_view: type[_View], rich_view: type[_View],
                 plain_view: type[_View]) -> _View:
    """``--json``, else the live view on a terminal, else plain lines."""
    if as_json:
        return json_view(model)
    return rich_view(model) if sys.stdout.isatty() else plain_view(model)


async def show_events(events: AsyncGenerator[DownloadProgress, None], view: _View) -> int:
    """Render every event of a pull or a push; the exit code."""
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                view.show(event)
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task
        # Leaving the generator stopped the transfer; what arrived stays on disk.
        view.interrupted()
        return INTERRUPTED
    finally:
        view.close()
    return view.result()


class _View:
    """What every output shares: the first event, the last, and what the numbers mean."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.first: DownloadProgress | None = None
        self.last: DownloadProgress | None = None
        self.started = time.monotonic()
        self._pending_start: DownloadProgress | None = None

    def show(self, event: DownloadProgress) -> None:
        """Record ``event`` and render it; the first line waits for the second event.

        A download that fails before its plan (gated, not found, unreachable) says
        only the error, not a "Starting download" line before it.
        """
        if self.first is None:
            self.first = self.last = event
            self.started = time.monotonic()  # the plan is made: the transfer's clock starts
            if event.status is DownloadStatus.STARTING:
                self._pending_start = event
                return
        self.last = event
        pending, self._pending_start = self._pending_start, None
        if pending is not None and not (event.status is DownloadStatus.ERROR and pending.total_bytes is None):
            self.render(pending)
        self.render(event)

    def render(self, event: DownloadProgress) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """The output is done (a live display stops here)."""

    def result(self) -> int:
        return 0 if self.last is not None and self.last.status is DownloadStatus.COMPLETE else 1

    # -- sentences -------------------------------------------------------------
    @property
    def nothing_to_fetch(self) -> bool:
        first = self.first
        return (
            first is not None and first.total_bytes is not None
            and first.downloaded_bytes is not None and first.downloaded_bytes >= first.total_bytes
        )

    #: what the byte counts mean, in the words of this command (push says "at the destination")
    where_present = "already on disk"
    moving = "fetching"
    moved = "fetched"
    kept = "is on disk and kept; run the same command again to resume from there."
    nothing_yet = "Interrupted before any byte arrived; run the same command again to start over."

    def resume_line(self, event: DownloadProgress) -> str | None:
        """On the first event: how much a rerun finds done already."""
        present, total = event.downloaded_bytes or 0, event.total_bytes
        if event.status is not DownloadStatus.STARTING or not present or total is None or present >= total:
            return None
        return (f"Resuming: {format_bytes(present)} of {format_bytes(total)} {self.where_present}, "
                f"{self.moving} the other {format_bytes(total - present)}")

    def nothing_line(self, event: DownloadProgress) -> str:
        return f"{self.model} is already complete, nothing to fetch: {event.path}"

    def done_lines(self, event: DownloadProgress) -> tuple[str, str | None]:
        """The success line and, when bytes moved, how long it took and how fast."""
        if self.nothing_to_fetch:
            return self.nothing_line(event), None
        elapsed = time.monotonic() - self.started
        moved = (event.total_bytes or 0) - ((self.first.downloaded_bytes or 0) if self.first else 0)
        detail = f"{format_bytes(moved)} {self.moved} in {_seconds(elapsed)}"
        if event.speed_bps:
            detail += f", {format_bytes(event.speed_bps)}/s on average"
        return event.message, detail

    def interrupted_line(self) -> str:
        last = self.last
        if last is None or not last.downloaded_bytes:
            return self.nothing_yet
        total = f" of {format_bytes(last.total_bytes)}" if last.total_bytes else ""
        return f"Interrupted: {format_bytes(last.downloaded_bytes)}{total} {self.kept}"

    def interrupted(self) -> None:
        click.secho(self.interrupted_line(), err=True, fg="yellow")


def _left(eta: float) -> str:
    """Time left, rounded up: 0.4 s left is "1s left", not "0s left"."""
    return format_duration(math.ceil(eta))


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 60 else format_duration(value)


def _progress_line(event: DownloadProgress) -> str:
    done, total = event.downloaded_bytes or 0, event.total_bytes
    text = f"{event.status.value} {format_bytes(done)}"
    if total is not None:
        shown = int((event.percent or 0) * 10) / 10  # only a finished download says 100 %
        text += f" / {format_bytes(total)} ({shown:.1f}%)"
    if event.speed_bps:
        text += f" at {format_bytes(event.speed_bps)}/s"
    if event.eta_seconds is not None and event.status is DownloadStatus.DOWNLOADING:
        text += f", {_left(event.eta_seconds)} left"
    if event.current:
        text += f": {event.current}"
    return text


class _JsonView(_View):
    """One JSON event per line, as they come; Ctrl-C ends with an ``ERROR`` event ``cancelled``."""

    def show(self, event: DownloadProgress) -> None:
        if self.first is None:
            self.first = event
        self.last = event
        click.echo(json.dumps(event.to_dict()))

    def interrupted(self) -> None:
        last = self.last
        event = error_event("cancelled", self.interrupted_line())
        if last is not None:
            event.percent, event.downloaded_bytes = last.percent, last.downloaded_bytes
            event.total_bytes, event.current, event.files = last.total_bytes, last.current, last.files
        click.echo(json.dumps(event.to_dict()))


class _PlainView(_View):
    """For logs and pipes: whole lines, never rewritten, never wrapped, one every few seconds."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self._printed_at = 0.0
        self._status: DownloadStatus | None = None

    def render(self, event: DownloadProgress) -> None:
        status, previous = event.status, self._status
        self._status = status
        if status is DownloadStatus.STARTING:
            click.echo(event.message)
            resume = self.resume_line(event)
            if resume:
                click.echo(resume)
            self._printed_at = time.monotonic()
        elif status is DownloadStatus.COMPLETE:
            line, detail = self.done_lines(event)
            click.echo(line)
            if detail:
                click.echo(detail)
        elif status is DownloadStatus.ERROR:
            print_error(event.error_code, event.message)
        elif status is DownloadStatus.VERIFYING and previous is not DownloadStatus.VERIFYING:
            click.echo(event.message)
            self._printed_at = time.monotonic()
        elif status is DownloadStatus.DOWNLOADING and time.monotonic() - self._printed_at >= PLAIN_INTERVAL:
            click.echo(_progress_line(event))
            self._printed_at = time.monotonic()


class _RichView(_View):
    """A terminal: the plan's first line, a live bar with the library's speed and ETA, a summary."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        from rich.console import Console

        self.console = Console(highlight=False, emoji=False)
        self._progress: Any = None
        self._task: Any = None
        self._saved_tty: tuple[int, Any] | None = None

    def _bar(self, event: DownloadProgress) -> Any:
        if self._progress is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
            from rich.table import Column

            self._progress = Progress(
                TextColumn("{task.fields[status]}", markup=False),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[speed]}", markup=False),
                TextColumn("{task.fields[eta]}", markup=False),
                TextColumn("{task.fields[current]}", markup=False,
                           table_column=Column(no_wrap=True, overflow="ellipsis")),
                console=self.console,
            )
            self._task = self._progress.add_task(
                "", total=event.total_bytes, completed=event.downloaded_bytes or 0,
                status=event.status.value, speed="", eta="", current="",
            )
            self._quiet_ctrl_c()
            self._progress.start()
        return self._progress

    def _quiet_ctrl_c(self) -> None:
        """Keep the terminal from echoing ``^C`` into the bar (restored in :meth:`close`)."""
        try:
            import termios

            if not sys.stdin.isatty():
                return
            fd = sys.stdin.fileno()
            saved = termios.tcgetattr(fd)
            quiet = list(saved)
            quiet[3] &= ~termios.ECHOCTL
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
            self._saved_tty = (fd, saved)
        except (ImportError, OSError, ValueError, AttributeError):
            return

    def render(self, event: DownloadProgress) -> None:
        from rich.text import Text

        status = event.status
        if status is DownloadStatus.STARTING:
            self.console.print(Text(event.message), soft_wrap=True)
            resume = self.resume_line(event)
            if resume:
                self.console.print(Text("↻ " + resume, style="cyan"), soft_wrap=True)
            return
        if status is DownloadStatus.COMPLETE:
            if self._progress is not None:  # done: the summary replaces the bar
                self._progress.live.transient = True
            self.close()
            line, detail = self.done_lines(event)
            self.console.print(Text.assemble(("✓ ", "bold green"), line), soft_wrap=True)
            if detail:
                self.console.print(Text("  " + detail, style="dim"), soft_wrap=True)
            return
        if status is DownloadStatus.ERROR:
            self.close()
            print_error(event.error_code, event.message)
            return
        speed = f"{format_bytes(event.speed_bps)}/s" if event.speed_bps else ""
        eta = ""
        if event.eta_seconds is not None and status is DownloadStatus.DOWNLOADING:
            eta = f"{_left(event.eta_seconds)} left"
        self._bar(event).update(
            self._task, total=event.total_bytes, completed=event.downloaded_bytes or 0,
            status=status.value, speed=speed, eta=eta, current=event.current or "",
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._saved_tty is not None:
            import termios

            fd, saved = self._saved_tty
            self._saved_tty = None
            with contextlib.suppress(OSError):
                termios.tcsetattr(fd, termios.TCSANOW, saved)

    def interrupted(self) -> None:
        self.close()
        super().interrupted()
