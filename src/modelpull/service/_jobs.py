"""Download jobs: one asyncio task per download, many watchers per job.

A job consumes :func:`modelpull.download_model` and keeps what it produced:
the events (numbered from 1, at most ``max_events`` of them, older progress
events coalesced away), the last progress, the state. Watchers read the event
list from any sequence number, so a client that reconnects with
``Last-Event-ID`` misses nothing that is still kept. The job does not depend
on its watchers: it runs until it finishes, is cancelled or is paused.

A job can run more than once under its id: ``resume`` starts a new run
(after a pause, a cancel, an error, or a restart of the service). Every run
starts with ``STARTING`` and ends with exactly one terminal event (``COMPLETE``,
or ``ERROR`` whose ``error_code`` may be ``paused``, ``cancelled`` or
``interrupted``); the numbering goes on across runs.

With a :class:`~._journal.Journal`, the manager keeps each job's record on
disk and, when it starts again, lists the finished jobs and resumes the ones
that were running.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._push import PUSH_TO, check_job, job_events
from .._secrets import Secret, as_secret
from ..api import PLACE_SETTINGS, SOURCES, RateLimit, check_download, download_model
from ..errors import ModelpullError
from ..progress import DownloadStatus
from ._journal import JobRecord, Journal, JournalKeeper

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
#: numbers skipped when a job that was running is restored. The journal gets a
#: job's progress every couple of seconds (at most ~10 events a second), so a
#: client may have seen a few numbers past the last one kept: the numbering
#: jumps past them, and a reconnect with ``Last-Event-ID`` misses nothing new.
RESTART_SEQ_GAP = 1000

CANCELLED_CODE = "cancelled"
PAUSED_CODE = "paused"
#: the service stopped during the run (the next start resumes it)
INTERRUPTED_CODE = "interrupted"
# When stops are asked for at once, the strongest wins: a cancel beats a pause,
# and either beats the service stopping.
_STOP_RANK = {INTERRUPTED_CODE: 0, PAUSED_CODE: 1, CANCELLED_CODE: 2}

# Hashing the token with a per-process key: the identity of a job depends on
# the token, yet nothing derived from it is stable outside this process.
_TOKEN_KEY = secrets.token_bytes(32)


class JobState:
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"


_FINISHED = frozenset({JobState.COMPLETE, JobState.ERROR, JobState.CANCELLED})


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


def _has_userinfo(url: str | None) -> bool:
    return bool(url) and "@" in urlsplit(url or "").netloc


def _without_userinfo(url: str | None) -> str | None:
    if not url or not _has_userinfo(url):
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


class JobConflict(Exception):
    """The job cannot do that in its state (``code`` says why)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Job:
    """A download running (or run, or paused) in the service."""

    def __init__(
        self, request: JobRequest, key: str, max_events: int = MAX_EVENTS,
        job_id: str | None = None, created_at: float | None = None,
    ) -> None:
        self.id = job_id or uuid.uuid4().hex[:16]
        self.request = request
        self.key = key
        self.created_at = created_at or time.time()
        self.updated_at = self.created_at
        self.finished_at: float | None = None
        self.state = JobState.RUNNING
        #: runs started under this id (a resume starts one more)
        self.runs = 0
        #: listed again from the journal after the service restarted
        self.restored = False
        #: the request had a token (which a restarted service no longer holds)
        self.has_token = bool(request.token)
        #: stopped by the service stopping: the journal says running, the next start resumes it
        self.interrupted = False
        self.joins = 0
        self.watchers = 0
        self.last: dict[str, Any] | None = None
        self._max_events = max(8, max_events)
        self._events: list[StoredEvent] = []
        self._seq = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Any] = []
        #: the service's bandwidth cap this job's transfer is paced by (set by its manager)
        self.limit: RateLimit | None = None
        #: the service's store folders, where the transfer looks for copies it already has
        self.place_settings: Mapping[str, Any] = {}
        self._stop_reason: str | None = None

    @classmethod
    def from_record(cls, record: JobRecord, max_events: int = MAX_EVENTS) -> Job:
        """A job as the journal kept it: not running, no token, its last event kept."""
        request = JobRequest(record.provider, record.model, record.base_url, dict(record.options))
        job = cls(request, request.identity(), max_events, job_id=record.id, created_at=record.created_at)
        job.state = JobState.PAUSED if record.state == JobState.RUNNING else record.state
        job.updated_at, job.finished_at = record.updated_at, record.finished_at
        job.runs, job.has_token, job.restored = record.runs, record.has_token, True
        if record.last_event is not None:
            last = record.last_event
            job._seq = int(last["seq"])
            job._events = [StoredEvent(job._seq, last, json.dumps(last, separators=(",", ":")))]
            job.last = last
        return job

    # -- state ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.state == JobState.RUNNING

    @property
    def finished(self) -> bool:
        """Complete, failed or cancelled (a paused job is not finished)."""
        return self.state in _FINISHED

    @property
    def needs_token(self) -> bool:
        """Resuming needs the token again (a restarted service never has it)."""
        return self.has_token and self.request.token is None

    @property
    def resumable(self) -> bool:
        """Can ``resume`` run it again? Not when it is complete, nor when its base_url's credentials were lost."""
        return self.state != JobState.COMPLETE and not (self.restored and _has_userinfo(self.request.base_url))

    @property
    def last_seq(self) -> int:
        return self._seq

    def actions(self) -> list[str]:
        """What a client may do now: pause/resume/retry (POST), cancel/remove (DELETE)."""
        if self.running:
            return ["pause", "cancel"]
        if self.state == JobState.PAUSED:
            return ["resume", "remove"] if self.resumable else ["remove"]
        return ["retry", "remove"] if self.resumable else ["remove"]

    def view(self) -> dict[str, Any]:
        """What listings show: the request (no token), state, what can be done, last progress."""
        return {
            "id": self.id,
            **self.request.public(),
            "has_token": self.has_token,
            "state": self.state,
            "needs_token": self.needs_token,
            "actions": self.actions(),
            "runs": self.runs,
            "restored": self.restored,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "watchers": self.watchers,
            "joins": self.joins,
            "last_event_id": self._seq,
            "progress": self.last,
        }

    def record(self) -> JobRecord:
        """What the journal keeps: never the token, nor credentials in base_url."""
        request = self.request
        return JobRecord(
            id=self.id,
            state=JobState.RUNNING if self.interrupted else self.state,
            provider=request.provider,
            model=request.model,
            base_url=_without_userinfo(request.base_url),
            options=dict(request.options),
            has_token=self.has_token,
            created_at=self.created_at,
            updated_at=self.updated_at,
            finished_at=self.finished_at,
            runs=self.runs,
            last_event=self.last,
            base_url_had_credentials=_has_userinfo(request.base_url),
        )

    # -- events --------------------------------------------------------------
    def events_after(self, seq: int) -> list[StoredEvent]:
        start = bisect.bisect_right(self._events, seq, key=lambda e: e.seq)
        return self._events[start:]

    async def wait_after(self, seq: int, timeout: float) -> list[StoredEvent]:
        """Events after ``seq``; waits up to ``timeout`` for one while the job runs."""
        events = self.events_after(seq)
        if events or not self.running:
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
        self._notify()

    def _notify(self) -> None:
        self.wake()
        for listener in self._listeners:
            listener(self)

    def wake(self) -> None:
        """Wake whoever waits for this job's next event."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _coalesce(self) -> None:
        # Keep the first event (STARTING, with the plan's totals) and drop the
        # oldest progress after it: later progress events supersede it.
        for index in range(1, len(self._events)):
            status = self._events[index].data.get("status")
            if status in (DownloadStatus.DOWNLOADING.value, DownloadStatus.VERIFYING.value):
                del self._events[index]
                return
        del self._events[1]

    def _set_state(self, state: str) -> None:
        self.state = state
        self.updated_at = time.time()
        self.finished_at = self.updated_at if state in _FINISHED else None

    def halt(self, state: str, code: str, message: str) -> None:
        """End a run that has no task any more (restored from the journal) with its terminal event."""
        self._publish(self._error_event(code, message))
        self._set_state(state)
        self._notify()

    # -- running -------------------------------------------------------------
    def start(self) -> None:
        """Start a run (the first, or the next one after a pause, cancel, error or restart)."""
        self.runs += 1
        self.interrupted = False
        self._stop_reason = None
        self._set_state(JobState.RUNNING)
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        request = self.request
        PLACE_SETTINGS.set(self.place_settings)  # this task's own context
        token = request.token.reveal() if request.token else None
        options = with_service_cap(request.provider, request.options, self.limit)
        events = job_events(request.provider, request.model, token, request.base_url, options) \
            if PUSH_TO in options else download_model(
                request.provider, request.model, token=token, base_url=request.base_url, **options)
        del token
        terminal = False
        stopped = False
        try:
            async for progress in events:
                self._publish(progress.to_dict())
                if progress.is_terminal:
                    terminal = True
                    self._set_state(
                        JobState.COMPLETE if progress.status is DownloadStatus.COMPLETE else JobState.ERROR
                    )
        except asyncio.CancelledError:
            stopped = not terminal
        except Exception as exc:  # noqa: BLE001 - a job always ends with an event
            log.error("job %s failed unexpectedly: %s", self.id, type(exc).__name__)
            self._publish(self._error_event("internal_error", f"unexpected error ({type(exc).__name__})"))
            self._set_state(JobState.ERROR)
            terminal = True
        finally:
            aclose = getattr(events, "aclose", None)  # an async generator at run time
            if aclose is not None:
                try:
                    await aclose()
                except asyncio.CancelledError:
                    pass  # a run is cancelled once, by its own stop: what follows must still happen
            # The state changes only now that the transfer has stopped, so a resume
            # never starts a run beside one still closing its files.
            if stopped:
                reason = self._stop_reason or CANCELLED_CODE  # read late: a cancel may have overtaken a pause
                if reason == INTERRUPTED_CODE:
                    # No event: the run goes on in the next service, which ends it
                    # with its terminal event; the journal keeps the last progress.
                    self.interrupted = True
                    self._set_state(JobState.PAUSED)
                else:
                    self._publish(self._stop_event(reason))
                    self._set_state(JobState.PAUSED if reason == PAUSED_CODE else JobState.CANCELLED)
            elif not terminal:
                self._publish(self._error_event("internal_error", "the download ended without a result"))
                self._set_state(JobState.ERROR)
            self._notify()
            log.info("job %s %s: %s %s", self.id, "interrupted" if self.interrupted else self.state,
                     request.provider, request.model)

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

    def _stop_event(self, reason: str) -> dict[str, Any]:
        model = self.request.model
        if PUSH_TO in self.request.options:
            what = "paused" if reason == PAUSED_CODE else "cancelled"
            return self._error_event(reason, f"Push of {model} {what}; nothing was tagged, and what the "
                                             "destination holds already is kept: resuming continues from there")
        if reason == PAUSED_CODE:
            message = f"Download of {model} paused; what was downloaded is kept and resuming continues from there"
        else:
            message = (f"Download of {model} cancelled; what was downloaded is kept and "
                       "the next download of it resumes from there")
        return self._error_event(reason, message)

    async def _stop(self, reason: str, wait: float) -> None:
        task = self._task
        if task is None or task.done():
            return
        first = self._stop_reason is None
        if first or _STOP_RANK[reason] > _STOP_RANK[self._stop_reason or reason]:
            self._stop_reason = reason
        if first:
            task.cancel()
        await asyncio.wait({task}, timeout=wait)

    async def cancel(self, wait: float = CANCEL_WAIT) -> None:
        """Stop the transfer (partial data stays on disk for a later resume); state ``cancelled``."""
        await self._stop(CANCELLED_CODE, wait)

    async def pause(self, wait: float = CANCEL_WAIT) -> None:
        """Stop the transfer like :meth:`cancel`, but the state is ``paused``."""
        await self._stop(PAUSED_CODE, wait)

    async def interrupt(self, wait: float = CANCEL_WAIT) -> None:
        """Stop the transfer because the service stops: the journal keeps it as running."""
        await self._stop(INTERRUPTED_CODE, wait)

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.wait({self._task})


def with_service_cap(provider: str, options: dict[str, Any], limit: RateLimit | None) -> dict[str, Any]:
    """A job's options with the service's cap: the job's own ``max_speed``, if any, within it.

    A source that does not move the bytes itself (an Ollama server) takes no cap.
    """
    if limit is None or "max_speed" not in SOURCES.get(provider).option_names:
        return options
    own = options.get("max_speed")
    return {**options, "max_speed": RateLimit(own, parent=limit) if own else limit}


def _check(request: JobRequest) -> Callable[..., str]:
    """The offline check of a job's request: a push's, or a download's."""
    return check_job if PUSH_TO in request.options else check_download


class TooManyJobs(Exception):
    """More downloads are running than the service allows."""


class JobManager:
    """The jobs of one service, bound to the event loop that runs them.

    With a ``journal``, jobs are kept on disk as they change, and the jobs
    found there are listed again (finished ones) or resumed (running ones) at
    once; raises :class:`~._journal.JournalError` if the journal cannot be opened.
    """

    def __init__(
        self,
        keep_finished: float = KEEP_FINISHED,
        max_running: int = MAX_RUNNING,
        max_finished: int = MAX_FINISHED,
        max_events: int = MAX_EVENTS,
        journal: Journal | None = None,
        limit: RateLimit | None = None,
        place_settings: Mapping[str, Any] | None = None,
    ) -> None:
        #: the service's bandwidth cap, shared by every job (its rate may change at any time)
        self.limit = limit
        self.place_settings = dict(place_settings or {})
        self.keep_finished = keep_finished
        self.max_running = max_running
        self.max_finished = max_finished
        self.max_events = max_events
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, Job] = {}  # by identity key
        self._feeds: set[JobFeed] = set()
        self._journal = journal
        self._keeper: JournalKeeper | None = None
        self._journaled: dict[str, tuple[str, int, bool]] = {}
        if journal is not None:
            journal.open()
            self._keeper = JournalKeeper(journal)
            self._restore(journal.load())

    def start(self, request: JobRequest) -> tuple[Job, bool]:
        """Start a job, or join the identical one running; returns (job, joined)."""
        self.prune()
        key = request.identity()
        running = self._running.get(key)
        if running is not None and running.running:
            running.joins += 1
            return running, True
        self._check_capacity()
        job = Job(request, key, self.max_events)
        self._adopt(job)
        self._running[key] = job
        log.info("job %s started: %s %s", job.id, request.provider, request.model)
        job.start()
        self._on_change(job)
        return job, False

    def _check_capacity(self) -> None:
        if len(self._running) >= self.max_running:
            raise TooManyJobs(
                f"{len(self._running)} downloads are running, the most this service allows; "
                "wait for one to finish, or pause or cancel one"
            )

    def _adopt(self, job: Job) -> None:
        job.limit = self.limit
        job.place_settings = self.place_settings
        job._listeners.append(self._on_change)
        self._jobs[job.id] = job

    async def pause(self, job: Job) -> None:
        """Stop a running job's transfer, keeping its partial data; state ``paused``."""
        if job.state == JobState.PAUSED:
            return
        if not job.running:
            raise JobConflict("not_running", f"job {job.id} is {job.state}: only a running download can be paused")
        await job.pause()

    def resume(self, job: Job, token: str | None = None) -> None:
        """Run a paused, cancelled or failed job again under its id (``token`` replaces the one it had).

        Raises :class:`JobConflict` (complete, needs its token, identical job
        running), :class:`TooManyJobs`, or :class:`~modelpull.errors.ModelpullError`
        for a token the source refuses offline.
        """
        if job.running:
            return
        if job.state == JobState.COMPLETE:
            raise JobConflict("already_complete", f"job {job.id} is complete: there is nothing to resume")
        if not job.resumable:
            raise JobConflict(
                "not_resumable",
                f"job {job.id} used a base_url with credentials, which are never stored: start the download again",
            )
        request = job.request
        if token is not None:
            request = replace(request, token=as_secret(token))
        if job.has_token and request.token is None:
            raise JobConflict(
                "needs_token",
                f"job {job.id} needs its token again (tokens are never stored): resume it with "
                '{"token": "..."} in the JSON body',
            )
        secret = request.token.reveal() if request.token else None
        _check(request)(request.provider, request.model, secret, request.base_url, **request.options)
        del secret
        key = request.identity()
        other = self._running.get(key)
        if other is not None and other is not job and other.running:
            raise JobConflict("download_running", f"the same download is running as job {other.id}")
        self._check_capacity()
        if self._running.get(job.key) is job:
            del self._running[job.key]
        job.request, job.key, job.has_token = request, key, bool(request.token)
        self._running[key] = job
        log.info("job %s resumed (run %d): %s %s", job.id, job.runs + 1, request.provider, request.model)
        job.start()
        self._on_change(job)

    def _restore(self, records: list[JobRecord]) -> None:
        """List the journal's jobs again; resume those that were running."""
        for record in sorted(records, key=lambda r: r.created_at):
            job = Job.from_record(record, self.max_events)
            self._adopt(job)
            self._journaled[job.id] = (job.state, job.runs, False)
            if record.state == JobState.RUNNING:
                job._seq += RESTART_SEQ_GAP
                self._resume_restored(job)
            log.info("job %s restored from the journal: %s, %s %s", job.id, job.state, record.provider, record.model)
        self.prune()

    def _resume_restored(self, job: Job) -> None:
        # The run the journal saw running has no terminal event: each path below gives it one.
        model = job.request.model
        if not job.resumable:
            job.halt(JobState.ERROR, INTERRUPTED_CODE,
                     f"The service stopped during the download of {model}; its base_url carried credentials, "
                     "which are never stored: start the download again")
            return
        if job.needs_token:
            job.halt(JobState.PAUSED, PAUSED_CODE,
                     f"Download of {model} paused by a restart of the service: it needs its token again: "
                     "resume it with the token (tokens are never stored)")
            return
        request = job.request
        try:
            _check(request)(request.provider, request.model, None, request.base_url, **request.options)
        except ModelpullError as exc:
            job.halt(JobState.ERROR, exc.code, exc.message)
            return
        other = self._running.get(job.key)
        if (other is not None and other.running) or len(self._running) >= self.max_running:
            job.halt(JobState.PAUSED, PAUSED_CODE,
                     f"Download of {model} paused by a restart of the service: "
                     f"{len(self._running)} downloads are already running; resume it later")
            return
        job.halt(JobState.PAUSED, INTERRUPTED_CODE,
                 f"The service stopped during the download of {model}; resuming from what is on disk")
        self._running[job.key] = job
        job.start()
        self._on_change(job)

    def get(self, job_id: str) -> Job | None:
        self.prune()
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        self.prune()
        return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def running(self) -> list[Job]:
        return [job for job in self._running.values() if job.running]

    def forget(self, job: Job) -> None:
        if job.running:
            raise ValueError("cancel or pause a running job before forgetting it")
        if self._jobs.pop(job.id, None) is not None:
            self._removed(job.id)

    def prune(self) -> None:
        now = time.time()
        finished = sorted(
            (j for j in self._jobs.values() if j.finished and j.finished_at is not None),
            key=lambda j: j.finished_at or 0,
        )
        excess = len(finished) - self.max_finished
        for index, job in enumerate(finished):
            if index < excess or now - (job.finished_at or now) > self.keep_finished:
                del self._jobs[job.id]
                self._removed(job.id)

    def _on_change(self, job: Job) -> None:
        if not job.running and self._running.get(job.key) is job:
            del self._running[job.key]
        if self._keeper is not None and job.id in self._jobs:
            mark = (job.state, job.runs, job.interrupted)
            urgent = self._journaled.get(job.id) != mark
            self._journaled[job.id] = mark
            self._keeper.save(job.id, job.record, urgent)
        if not self._feeds:
            return
        view = job.view()
        for feed in self._feeds:
            feed.put(job.id, {"type": "job", "job": view})

    def _removed(self, job_id: str) -> None:
        self._journaled.pop(job_id, None)
        if self._keeper is not None:
            self._keeper.remove(job_id)
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

    def end_streams(self) -> None:
        """The server is stopping: every event stream ends at once, cleanly, instead of being cut
        when the server's grace time runs out; clients reconnect with ``Last-Event-ID``."""
        self.closing = True
        for job in self._jobs.values():
            job.wake()
        for feed in list(self._feeds):
            feed.wake.set()

    async def close(self) -> None:
        """The service is stopping: stop every running job (with a journal, the next start resumes them)."""
        self.end_streams()
        jobs = self.running()
        journaled = self._keeper is not None
        await asyncio.gather(*(job.interrupt() if journaled else job.cancel() for job in jobs),
                             return_exceptions=True)
        if self._keeper is not None:
            await self._keeper.close()
        self.release_journal()

    def release_journal(self) -> None:
        """Let another manager (or service) take the journal."""
        if self._journal is not None:
            self._journal.close()


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
