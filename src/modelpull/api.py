"""``download_model`` and ``plan_download``: the one flow every caller uses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from ._format import format_bytes
from ._secrets import Secret, as_secret, redact
from ._transfer import RateLimit, parse_rate
from .errors import (
    ConnectionFailed,
    IncompleteTransfer,
    InvalidOption,
    ModelpullError,
    OfflineUnavailable,
    ServerError,
    TransferTimeout,
)
from .plan import LocalCopy, Plan
from .progress import DownloadProgress, DownloadStatus, ProgressReporter, ProgressTracker
from .providers import SOURCES, Location, Provider
from .providers.base import PLACE_SETTINGS, bool_option, check_free_space

__all__ = [
    "PLACE_SETTINGS",
    "SOURCES",
    "Location",
    "RateLimit",
    "check_download",
    "describe_sources",
    "download_model",
    "make_provider",
    "parse_rate",
    "plan_download",
    "source_defaults",
]

log = logging.getLogger("modelpull")

#: how long the fetch may take to stop once the caller has left
_STOP_GRACE = 2.0
_TICK = 0.1


def make_provider(
    provider: object, model: object, token: Any = None, base_url: object = None, **options: Any
) -> Provider:
    """Validate everything that can be checked offline and build the provider."""
    source = SOURCES.get(provider)
    allowed = source.option_names
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidOption(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
            f"provider {source.name!r}; accepted: {', '.join(sorted(allowed))}"
        )
    if base_url is not None and not isinstance(base_url, str):
        raise InvalidOption("base_url must be a string URL")
    try:
        secret = as_secret(token)
    except TypeError:
        raise InvalidOption("token must be a string") from None
    if not isinstance(model, str):
        model = "" if model is None else model
    prov = source.build(source, model, secret, base_url or None, options)  # type: ignore[arg-type]
    if base_url and source.base_url_help is None:  # checked after the model, which comes first
        raise InvalidOption(f"provider {source.name!r} takes no base_url; the model names where it comes from")
    return prov


def check_download(
    provider: object, model: object, token: Any = None, base_url: object = None, **options: Any
) -> str:
    """Check a download request offline (what :func:`download_model` would refuse at once).

    Returns the source's name (an alias resolved); raises
    :class:`~modelpull.errors.ModelpullError`. No network call, nothing written.
    """
    return make_provider(provider, model, token, base_url, **options).name


def source_defaults(
    provider: str, settings: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> tuple[str | None, dict[str, Any]]:
    """(base_url, options) a download from ``provider`` gets from machine-wide settings.

    ``settings`` maps setting names (``hf_endpoint``, ``hf_cache_dir``,
    ``ollama_url``, ...: every :class:`~modelpull.providers.Location`) to values;
    ``options``, the request's own, tell where it lands (``lmstudio=true`` takes
    LM Studio's folder, not the source's cache).
    """
    source = SOURCES.get(provider)
    base_url = settings.get(source.base_url_setting.name) if source.base_url_setting else None
    landing = source.landing(options)
    defaults: dict[str, Any] = {}
    if landing.folder_option and landing.folder_setting and settings.get(landing.folder_setting.name):
        defaults[landing.folder_option] = settings[landing.folder_setting.name]
    return base_url or None, defaults


def describe_sources() -> list[dict[str, Any]]:
    """Every source as people see it (common ones first): names, examples, options."""
    return [source.describe() for source in SOURCES.by_rank()]


async def plan_download(
    provider: str, model: str, token: str | None = None, base_url: str | None = None, **options: Any
) -> Plan:
    """What a download would fetch: files or layers, sizes, what is local, total.

    Moves no model bytes. Raises :class:`~modelpull.errors.ModelpullError`.
    """
    options.pop("dry_run", None)
    prov = make_provider(provider, model, token, base_url, **options)
    try:
        if prov.offline:
            copy = await prov.local_copy()
            if copy is None:
                raise OfflineUnavailable(_missing(prov, copy))
            copy.plan.notes.append(f"offline mode: this is the copy on disk ({_since(copy)})")
            return copy.plan
        return await prov.plan()
    except ModelpullError as exc:
        exc.message = redact(exc.message, prov.secrets)
        exc.args = (exc.message,)
        raise
    finally:
        await prov.close()


async def download_model(
    provider: str,
    model: str,
    token: str | None = None,
    base_url: str | None = None,
    **options: Any,
) -> AsyncIterator[DownloadProgress]:
    """Download a model, yielding :class:`DownloadProgress` events.

    The first event is ``STARTING``; then ``DOWNLOADING``/``VERIFYING`` events;
    the last is exactly one ``COMPLETE`` (with ``path``) or ``ERROR`` (with
    ``error_code``). Nothing raises out of the generator for bad input.
    Leaving the loop (``break``, ``aclose()``, cancellation) stops the transfer;
    the next call resumes from what is on disk.
    """
    secrets: list[Secret | None] = []
    if isinstance(token, str):
        secrets.append(Secret(token))
    reporter = ProgressReporter(ProgressTracker())
    started = False
    prov: Provider | None = None
    try:
        prov = make_provider(provider, model, token, base_url, **options)
        secrets.extend(prov.secrets)
        dry_run = bool_option(options, "dry_run")
        copy = await prov.local_copy()
        if prov.offline or (copy is not None and copy.complete and copy.pinned and not dry_run):
            # No network at all: the copy on disk, or what is missing from it.
            if copy is None or not copy.complete:
                raise OfflineUnavailable(_missing(prov, copy))
            started = True
            for served in _from_local(prov, copy, _local_reason(prov, copy), dry_run):
                yield _scrub(served, secrets)
            return
        try:
            plan = await prov.plan()
        except _SOURCE_FAILED as exc:
            if copy is None or not copy.complete:
                raise
            started = True
            for served in _from_local(prov, copy, _fallback_reason(prov, copy, exc), dry_run):
                yield _scrub(served, secrets)
            return
        # No items: the source announces sizes as it goes (Ollama's server).
        tracker = ProgressTracker(plan.total_bytes if plan.items else None)
        for item in plan.items:
            tracker.declare(item.name, item.size, item.present_bytes)
        reporter = ProgressReporter(tracker)
        started = True
        yield _scrub(reporter.event(DownloadStatus.STARTING, prov.starting_message(plan), force=True), secrets)
        if dry_run:
            done = reporter.complete(f"Dry run, nothing downloaded. Plan: {plan.summary()}", plan.destination or "")
            done.downloaded_bytes = plan.present_bytes
            yield _scrub(done, secrets)
            return
        check_free_space(prov.space_needed(plan))
        fetch = asyncio.ensure_future(prov.fetch(plan, tracker))
        verifying_shown = False
        try:
            while not fetch.done():
                await asyncio.wait({fetch}, timeout=_TICK)
                if fetch.done():
                    break
                total = tracker.total
                all_present = total is not None and tracker.done >= total
                if all_present and (tracker.verifying or verifying_shown):
                    what = tracker.verifying or prov.model
                    event = reporter.event(
                        DownloadStatus.VERIFYING, f"Verifying {what}", force=not verifying_shown
                    )
                    verifying_shown = True
                else:
                    event = reporter.event(DownloadStatus.DOWNLOADING, prov.progress_message(tracker))
                if event is not None:
                    yield _scrub(event, secrets)
            try:
                path = fetch.result()
            except _SOURCE_FAILED as exc:
                if copy is None or not copy.complete:
                    raise
                reason = _fallback_reason(prov, copy, exc)
                yield _scrub(reporter.complete(reason, copy.path), secrets)
                return
        finally:
            if not fetch.done():
                fetch.cancel()
                await asyncio.wait({fetch}, timeout=_STOP_GRACE)
            elif not fetch.cancelled():
                fetch.exception()  # retrieved: no "never retrieved" warning
        for item in plan.items:
            tracker.update(item.name, item.size or 0)
        fetched = [item for item in plan.items if not item.local]
        if fetched and not verifying_shown:
            # Verification ran while the bytes arrived; say so before the end.
            message = prov.verified_message(plan, fetched)
            yield _scrub(reporter.event(DownloadStatus.VERIFYING, message, force=True), secrets)
        yield _scrub(reporter.complete(prov.complete_message(plan, path), path), secrets)
    except ModelpullError as exc:
        if not started:
            yield _scrub(reporter.event(DownloadStatus.STARTING, f"Starting download of {model!s:.100}", force=True), secrets)
        yield _scrub(reporter.error(exc.code, _actionable(exc)), secrets)
    except Exception as exc:  # noqa: BLE001 - the edge: one ERROR event, never a raise
        log.error("unexpected failure downloading %s: %s", type(exc).__name__, redact(str(exc), secrets))
        if not started:
            yield _scrub(reporter.event(DownloadStatus.STARTING, "Starting download", force=True), secrets)
        yield _scrub(
            reporter.error("internal_error", f"unexpected error ({type(exc).__name__}): {exc}"), secrets
        )
    finally:
        if prov is not None:
            await prov.close()


#: failures of the source itself (not answers such as "not found"): a complete copy on disk serves
_SOURCE_FAILED = (ConnectionFailed, ServerError, TransferTimeout, IncompleteTransfer)


def _from_local(prov: Provider, copy: LocalCopy, reason: str, dry_run: bool) -> Iterator[DownloadProgress]:
    """STARTING and COMPLETE for a model served from its copy on disk."""
    tracker = ProgressTracker(copy.plan.total_bytes)
    for item in copy.plan.items:
        tracker.declare(item.name, item.size, item.present_bytes)
    reporter = ProgressReporter(tracker)
    starting = reporter.event(
        DownloadStatus.STARTING, f"Using the copy of {prov.model} on disk: {copy.plan.summary()}", force=True
    )
    assert starting is not None
    yield starting
    if dry_run:
        reason = f"Dry run, nothing downloaded. {reason}"
    yield reporter.complete(reason, copy.path)


def _since(copy: LocalCopy) -> str:
    if copy.downloaded_at is None:
        return "earlier"
    return "on " + time.strftime("%Y-%m-%d %H:%M", time.localtime(copy.downloaded_at))


def _local_reason(prov: Provider, copy: LocalCopy) -> str:
    if prov.offline:
        return (
            f"{prov.model} is complete in the local store (offline mode: nothing was fetched, "
            f"downloaded {_since(copy)}): {copy.path}"
        )
    return (
        f"{prov.model} at {copy.plan.revision or 'this revision'} is already on disk; a pinned revision "
        f"needs no network: {copy.path}"
    )


def _fallback_reason(prov: Provider, copy: LocalCopy, exc: ModelpullError) -> str:
    return (
        f"the source could not be used ({exc.message}); using the copy of {prov.model} downloaded "
        f"{_since(copy)} from the local store: {copy.path}"
    )


def _missing(prov: Provider, copy: LocalCopy | None) -> str:
    head = f"offline mode is on, and {prov.model} is not complete on disk"
    if copy is None or not copy.plan.items:
        return f"{head}: nothing of it is in the local store; download it once without offline mode"
    missing = copy.missing
    names = ", ".join(item.name for item in missing[:5]) + (", ..." if len(missing) > 5 else "")
    size = sum(item.size or 0 for item in missing)
    return (
        f"{head}: {len(missing)} file{'s' if len(missing) != 1 else ''} ({format_bytes(size)}) "
        f"missing: {names}; run the download once without offline mode to fetch them"
    )


def _actionable(exc: ModelpullError) -> str:
    message = exc.message
    if exc.resumable and "again" not in message:
        message += "; run the download again to resume from what is already on disk"
    return message


def _scrub(event: DownloadProgress | None, secrets: list[Secret | None]) -> DownloadProgress:
    assert event is not None
    event.message = redact(event.message, secrets)
    if event.path:
        event.path = redact(event.path, secrets)
    if event.current:
        event.current = redact(event.current, secrets)
    return event
