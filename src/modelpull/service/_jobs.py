"""Download jobs: one asyncio task per download, many watchers per job.

A job consumes :func:`modelpull.download_model` and keeps what it produced:
the events (numbered from 1, at most ``max_events`` of them, older progress
events coalesced away), the last progress, the state. Watchers read the event
list from any sequence number, so a client that reconnects with
``Last-Event-ID`` misses nothing that is still kept. The job does not depend
on its watchers: it runs until it finishes or is cancelled.

This module knows nothing of HTTP; it needs only a running event loop.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._secrets import Secret
from ..api import download_model
from ..progress import DownloadStatus

log = logging.getLogger("modelpull.service")

#: events kept per job; older progress events are dropped first (the newest tells all)
MAX_EVENTS = 500
#: how long a finished job stays listed, in seconds
KEEP_FINISHED = 3600.0
#: finished jobs kept at most (the oldest are forgotten first)
MAX_FINISHED = 500
#: running jobs at most; more are refused
MAX_RUNNING = 32
#: how long a cancel waits for the transfer to stop before answering
CANCEL_WAIT = 5.0

CANCELLED_CODE = "cancelled"

# Hashing the token with a per-process key: the identity of a job depends on
# the token, yet nothing derived from it is stable outside this process.
_TOKEN_KEY = secrets.token_bytes(32)


class JobState:
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class JobRequest:
    """What to download; ``token`` is a :class:`Secret` and never shown."""

    provider: str
    model: str
    base_url: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    token: Secret | None = None

    def identity(self) -> str:
        """Equal for requests that would download the same thing the same way."""
        token_mac = (
            hmac.new(_TOKEN_KEY, self.token.reveal().encode(), hashlib.sha256).hexdigest()
            if self.token
            else None
        )
        canonical = json.dumps(
            [self.provider, self.model, self.base_url, self.options, token_mac],
            sort_keys=True,
            default=str,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def public(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "base_url": _without_userinfo(self.base_url),
            "options": self.options,
            "has_token": bool(self.token),
        }


def _without_userinfo(url: str | None) -> str | None:
    if not url or "@" not in url:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class StoredEvent:
    """One event, encoded once for every watcher."""

    seq: int
    data: dict[str, Any]
    json: str

    @property
    def sse(self) -> bytes:
        # json.dumps escapes newlines, so one data line always suffices.
        return f"id: {self.seq}\ndata: {self.json}\n\n".encode()

    @property
    def ndjson(self) -> bytes:
        return (self.json + "\n").encode()


class Job:
    """A download running (or run) in the service."""

    def __init__(self, request: JobRequest, key: str, max_events: int = MAX_EVENTS) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.request = request
        self.key = key
        self.created_at = time.time()
        self.finished_at: float | None = None
        self.state = JobState.RUNNING
        self.joins = 0
        self.watchers = 0
        self.last: dict[str, Any] | None = None
        self._max_events = max(8, max_events)
        self._events: list[StoredEvent] = []
        self._seq = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._token = request.token
        self._listeners: list[Any] = []
        self._cancelling = False

    # -- state ---------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.state != JobState.RUNNING

    @property
    def last_seq(self) -> int:
        return self._seq

    def view(self) -> dict[str, Any]:
        """What listings show: the request (no token), state and last progress."""
        return {
            "id": self.id,
            **self.request.public(),
            "state": self.state,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "watchers": self.watchers,
            "joins": self.joins,
            "last_event_id": self._seq,
            "progress": self.last,
        }

    # -- events --------------------------------------------------------------
    def events_after(self, seq: int) -> list[StoredEvent]:
        start = bisect.bisect_right(self._events, seq, key=lambda e: e.seq)
        return self._events[start:]

    async def wait_after(self, seq: int, timeout: float) -> list[StoredEvent]:
        """Events after ``seq``; waits up to ``timeout`` for one while the job runs."""
        events = self.events_after(seq)
        if events or self.finished:
            return events
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return self.events_after(seq)

    def _publish(self, data: dict[str, Any]) -> None:
        self._seq += 1
        data = {**data, "job_id": self.id, "seq": self._seq, "time": round(time.time(), 3)}
        event = StoredEvent(self._seq, data, json.dumps(data, separators=(",", ":")))
        self._events.append(event)
        if len(self._events) > self._max_events:
            self._coalesce()
        self.last = data
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for listener in self._listeners:
            listener(self)

    def _coalesce(self) -> None:
        # Keep the first event (STARTING, with the plan's totals) and drop the
        # oldest progress after it: later progress events supersede it.
        for index in range(1, len(self._events)):
            status = self._events[index].data.get("status")
            if status in (DownloadStatus.DOWNLOADING.value, DownloadStatus.VERIFYING.value):
                del self._events[index]
                return
        del self._events[1]

    # -- running -------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        request = self.request
        token = self._token.reveal() if self._token else None
        events = download_model(
            request.provider, request.model, token=token, base_url=request.base_url, **request.options
        )
        del token
        terminal = False
        try:
            async for progress in events:
                self._publish(progress.to_dict())
                if progress.is_terminal:
                    terminal = True
                    self.state = (
                        JobState.COMPLETE if progress.status is DownloadStatus.COMPLETE else JobState.ERROR
                    )
        except asyncio.CancelledError:
            self._publish(self._cancel_event())
            self.state = JobState.CANCELLED
            terminal = True
        except Exception as exc:  # noqa: BLE001 - a job always ends with an event
            log.error("job %s failed unexpectedly: %s", self.id, type(exc).__name__)
            self._publish(self._error_event("internal_error", f"unexpected error ({type(exc).__name__})"))
            self.state = JobState.ERROR
            terminal = True
        finally:
            aclose = getattr(events, "aclose", None)  # an async generator at run time
            if aclose is not None:
                await aclose()
            if not terminal:
                self._publish(self._error_event("internal_error", "the download ended without a result"))
                self.state = JobState.ERROR
            self._token = None
            self.finished_at = time.time()
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
            for listener in self._listeners:
                listener(self)
            log.info("job %s %s: %s %s", self.id, self.state, request.provider, request.model)

    def _error_event(self, code: str, message: str) -> dict[str, Any]:
        last = self.last or {}
        return {
            "status": DownloadStatus.ERROR.value,
            "message": message,
            "percent": last.get("percent"),
            "downloaded_bytes": last.get("downloaded_bytes"),
            "total_bytes": last.get("total_bytes"),
            "error_code": code,
            "path": None,
            "speed_bps": None,
            "eta_seconds": None,
            "current": last.get("current"),
        }

    def _cancel_event(self) -> dict[str, Any]:
        return self._error_event(
            CANCELLED_CODE,
            f"Download of {self.request.model} cancelled; what was downloaded is kept and "
            "the next download of it resumes from there",
        )

    async def cancel(self, wait: float = CANCEL_WAIT) -> None:
        """Stop the transfer (partial data stays on disk for a later resume)."""
        task = self._task
        if task is None or task.done():
            return
        if not self._cancelling:
            self._cancelling = True
            task.cancel()
        await asyncio.wait({task}, timeout=wait)

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.wait({self._task})


class TooManyJobs(Exception):
    """More downloads are running than the service allows."""


class JobManager:
    """The jobs of one service, bound to the event loop that runs them."""

    def __init__(
        self,
        keep_finished: float = KEEP_FINISHED,
        max_running: int = MAX_RUNNING,
        max_finished: int = MAX_FINISHED,
        max_events: int = MAX_EVENTS,
    ) -> None:
        self.keep_finished = keep_finished
        self.max_running = max_running
        self.max_finished = max_finished
        self.max_events = max_events
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, Job] = {}  # by identity key
        self._feeds: set[JobFeed] = set()

    def start(self, request: JobRequest) -> tuple[Job, bool]:
        """Start a job, or join the identical one running; returns (job, joined)."""
        self.prune()
        key = request.identity()
        running = self._running.get(key)
        if running is not None and not running.finished:
            running.joins += 1
            return running, True
        if len(self._running) >= self.max_running:
            raise TooManyJobs(
                f"{len(self._running)} downloads are running, the most this service allows; "
                "wait for one to finish or cancel one"
            )
        job = Job(request, key, self.max_events)
        job._listeners.append(self._on_change)
        self._jobs[job.id] = job
        self._running[key] = job
        log.info("job %s started: %s %s", job.id, request.provider, request.model)
        job.start()
        self._on_change(job)
        return job, False

    def get(self, job_id: str) -> Job | None:
        self.prune()
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        self.prune()
        return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def running(self) -> list[Job]:
        return [job for job in self._running.values() if not job.finished]

    def forget(self, job: Job) -> None:
        if not job.finished:
            raise ValueError("cancel a running job before forgetting it")
        if self._jobs.pop(job.id, None) is not None:
            self._notify_removed(job.id)

    def prune(self) -> None:
        now = time.time()
        finished = sorted(
            (j for j in self._jobs.values() if j.finished_at is not None), key=lambda j: j.finished_at or 0
        )
        excess = len(finished) - self.max_finished
        for index, job in enumerate(finished):
            if index < excess or now - (job.finished_at or now) > self.keep_finished:
                del self._jobs[job.id]
                self._notify_removed(job.id)

    def _on_change(self, job: Job) -> None:
        if job.finished and self._running.get(job.key) is job:
            del self._running[job.key]
        if not self._feeds:
            return
        view = job.view()
        for feed in self._feeds:
            feed.put(job.id, {"type": "job", "job": view})

    def _notify_removed(self, job_id: str) -> None:
        for feed in self._feeds:
            feed.put(job_id, {"type": "removed", "id": job_id})

    # -- a feed of every job's changes, for pages listing all jobs --------------
    def feed(self) -> JobFeed:
        feed = JobFeed(self)
        for job in sorted(self._jobs.values(), key=lambda j: j.created_at):
            feed.put(job.id, {"type": "job", "job": job.view()})
        self._feeds.add(feed)
        return feed

    def _drop_feed(self, feed: JobFeed) -> None:
        self._feeds.discard(feed)

    async def close(self) -> None:
        """Cancel every running job (the service is stopping)."""
        self.closing = True
        jobs = self.running()
        await asyncio.gather(*(job.cancel() for job in jobs), return_exceptions=True)
        for feed in list(self._feeds):
            feed.wake.set()


class JobFeed:
    """Changes of all jobs for one watcher; a slow watcher gets each job's latest state."""

    def __init__(self, manager: JobManager) -> None:
        self._manager = manager
        self._pending: dict[str, dict[str, Any]] = {}
        self.wake = asyncio.Event()

    def put(self, job_id: str, message: dict[str, Any]) -> None:
        self._pending.pop(job_id, None)  # re-insert: changes go out in order of last change
        self._pending[job_id] = message
        self.wake.set()

    async def next(self, timeout: float) -> list[dict[str, Any]]:
        if not self._pending:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        self.wake.clear()
        messages = list(self._pending.values())
        self._pending.clear()
        return messages

    def close(self) -> None:
        self._manager._drop_feed(self)
