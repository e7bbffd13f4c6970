"""The service's journal: one small JSON file per job in its data directory.

One file per job rather than an append-only log: a record is replaced whole
(temp file, fsync, rename, fsync of the folder), so a crash leaves the old
record or the new one, never a torn line to repair; forgetting a job is one
unlink; nothing needs compacting; a damaged file costs one job, not the
others. A service holds a few hundred jobs at most, so a folder of small files
stays cheap to read at start.

A record holds the request without its token (provider, model, base_url
without credentials, options), whether it had a token, the state, the last
event, timestamps and the number of runs. Never a token, never a key.

Writes happen off the event loop (an fsync can wait behind gigabytes of model
data being written back): state changes at once, progress at most every
:data:`PROGRESS_INTERVAL` seconds per job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .._data import data_dir

log = logging.getLogger("modelpull.service")

DATA_DIR_ENV = "MODELPULL_DATA_DIR"
FORMAT = "modelpull-service-job"
VERSION = 1
#: the journal's folder inside the data directory
JOBS_FOLDER = "jobs"
#: one service per data directory: the second one would resume the same jobs
LOCK_NAME = "service.lock"
#: a job's progress reaches the journal at most this often (state changes at once)
PROGRESS_INTERVAL = 2.0
#: a file larger than this in the journal folder is not one of ours
MAX_RECORD_BYTES = 16 * 1024 * 1024
#: above this, the last event is kept without its per-file list (a repo of thousands of files)
LEAN_RECORD_BYTES = 256 * 1024

STATES = ("running", "paused", "complete", "error", "cancelled")
_RECORD_NAME = re.compile(r"^[0-9a-f]{16}\.json$")
_TEMP_NAME = re.compile(r"^\.[0-9a-f]{16}\.json\..+\.tmp$")


def default_data_dir() -> Path:
    """Where ``modelpull serve`` keeps its journal unless told otherwise.

    ``<modelpull's data folder>/service``: ``$XDG_DATA_HOME/modelpull/service``
    (else ``~/.local/share/...``) on Linux, the platform's own place elsewhere.
    """
    return data_dir("service")


class BadRecord(ValueError):
    """A file in the journal folder is not a job record this service can read."""


class JournalError(Exception):
    """The journal cannot be used (folder not writable, or another service holds it)."""


@dataclass(frozen=True)
class JobRecord:
    """What the journal keeps of one job."""

    id: str
    state: str
    provider: str
    model: str
    base_url: str | None
    options: dict[str, Any]
    has_token: bool
    created_at: float
    updated_at: float
    finished_at: float | None = None
    runs: int = 1
    last_event: dict[str, Any] | None = None
    #: the base_url carried credentials (user:password@), which are not kept either
    base_url_had_credentials: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "id": self.id,
            "state": self.state,
            "request": {
                "provider": self.provider,
                "model": self.model,
                "base_url": self.base_url,
                "options": self.options,
            },
            "has_token": self.has_token,
            "base_url_had_credentials": self.base_url_had_credentials,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "runs": self.runs,
            "last_event": self.last_event,
        }

    @classmethod
    def from_json(cls, data: Any, job_id: str) -> JobRecord:
        """Check a record read back; raises :class:`BadRecord` saying what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BadRecord("not a modelpull job record")
        if data.get("version") != VERSION:
            raise BadRecord(f"record version {str(data.get('version'))[:20]!r}, this modelpull reads {VERSION}")
        if data.get("id") != job_id:
            raise BadRecord("the id inside does not match the file name")
        state = data.get("state")
        if state not in STATES:
            raise BadRecord(f"unknown state {str(state)[:20]!r}")
        request = data.get("request")
        if not isinstance(request, dict):
            raise BadRecord("no request")
        provider, model = request.get("provider"), request.get("model")
        base_url, options = request.get("base_url"), request.get("options")
        if not isinstance(provider, str) or not isinstance(model, str) or not provider or not model:
            raise BadRecord("the request has no provider or model")
        if base_url is not None and not isinstance(base_url, str):
            raise BadRecord("base_url is not a string")
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            raise BadRecord("options are not an object")
        created_at, updated_at = _time(data.get("created_at")), _time(data.get("updated_at"))
        finished_at = data.get("finished_at")
        if created_at is None or updated_at is None or (finished_at is not None and _time(finished_at) is None):
            raise BadRecord("bad timestamps")
        runs = data.get("runs")
        if not isinstance(runs, int) or isinstance(runs, bool) or runs < 0:
            raise BadRecord("bad run count")
        last = data.get("last_event")
        if last is not None:
            seq = last.get("seq") if isinstance(last, dict) else None
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
                raise BadRecord("the last event has no sequence number")
        has_token, had_credentials = data.get("has_token"), data.get("base_url_had_credentials", False)
        if not isinstance(has_token, bool) or not isinstance(had_credentials, bool):
            raise BadRecord("bad flags")
        return cls(
            id=job_id, state=state, provider=provider, model=model, base_url=base_url, options=options,
            has_token=has_token, created_at=created_at, updated_at=updated_at,
            finished_at=_time(finished_at), runs=runs, last_event=last,
            base_url_had_credentials=had_credentials,
        )


def _time(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class Journal:
    """The journal folder of one data directory (``<data_dir>/jobs``), held by one service."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.folder = self.data_dir / JOBS_FOLDER
        self._lock: FileLock | None = None

    def __repr__(self) -> str:
        return f"Journal({str(self.folder)!r})"

    def open(self) -> None:
        """Create the folder and take it for this service; raises :class:`JournalError`."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = FileLock(str(self.data_dir / LOCK_NAME), timeout=0)
            lock.acquire()
        except Timeout:
            raise JournalError(
                f"another modelpull service uses the data directory {self.data_dir} "
                "(two would resume the same jobs); stop it or choose another --data-dir"
            ) from None
        except OSError as exc:
            raise JournalError(f"cannot use the data directory {self.data_dir}: {exc.strerror or exc}") from None
        self._lock = lock
        for entry in self._entries():
            if _TEMP_NAME.match(entry.name) and not entry.is_symlink() and entry.is_file():
                # a write cut short by a crash: the record it was replacing is still there
                try:
                    entry.unlink()
                except OSError:
                    pass

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def check(self) -> None:
        """Can a service use this data directory now? (opens and closes it)"""
        self.open()
        self.close()

    def _entries(self) -> list[Path]:
        try:
            return sorted(self.folder.iterdir())
        except OSError as exc:
            log.warning("cannot read the journal folder %s: %s", self.folder, exc.strerror or exc)
            return []

    def load(self) -> list[JobRecord]:
        """Every job record; anything else in the folder is skipped with a log line."""
        records = []
        for entry in self._entries():
            if _TEMP_NAME.match(entry.name):
                continue
            if not _RECORD_NAME.match(entry.name) or entry.is_symlink() or not entry.is_file():
                log.warning("journal: skipped %s: not a job record of this service", entry.name[:80])
                continue
            try:
                if entry.stat().st_size > MAX_RECORD_BYTES:
                    raise BadRecord("too large for a job record")
                data = json.loads(entry.read_bytes())
                records.append(JobRecord.from_json(data, entry.name[: -len(".json")]))
            except (OSError, ValueError, RecursionError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                log.warning("journal: skipped %s: %s", entry.name, (reason or type(exc).__name__)[:200])
        return records

    def write(self, record: JobRecord) -> None:
        """Replace the job's record atomically (temp file, fsync, rename)."""
        content = record.to_json()
        data = json.dumps(content, separators=(",", ":"), sort_keys=True, default=str).encode()
        if len(data) > LEAN_RECORD_BYTES and isinstance(content["last_event"], dict):
            content["last_event"] = {k: v for k, v in content["last_event"].items() if k != "files"}
            data = json.dumps(content, separators=(",", ":"), sort_keys=True, default=str).encode()
        fd, temp = tempfile.mkstemp(prefix=f".{record.id}.json.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.folder / f"{record.id}.json")
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise

    def remove(self, job_id: str) -> None:
        try:
            (self.folder / f"{job_id}.json").unlink()
        except FileNotFoundError:
            pass

    def sync_folder(self) -> None:
        """Make renames and unlinks durable."""
        if sys.platform == "win32":
            return
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


RecordSource = Callable[[], JobRecord]


class JournalKeeper:
    """Keeps the journal in step with the jobs, writing in a thread.

    ``save`` marks a job to be written (``urgent``: now, else within
    ``interval``); ``remove`` forgets it. One task writes, so a job's writes
    and its removal happen in the order they were asked for.
    """

    def __init__(self, journal: Journal, interval: float = PROGRESS_INTERVAL) -> None:
        self.journal = journal
        self._interval = interval
        self._pending: dict[str, RecordSource | None] = {}
        self._has_work = asyncio.Event()
        self._now = asyncio.Event()
        self._closing = False
        self._closed = False
        self._failed: set[str] = set()
        self._task = asyncio.ensure_future(self._run())

    def save(self, job_id: str, record: RecordSource, urgent: bool) -> None:
        if self._closed:
            return
        self._pending[job_id] = record
        self._has_work.set()
        if urgent:
            self._now.set()

    def remove(self, job_id: str) -> None:
        if self._closed:
            return
        self._pending[job_id] = None
        self._has_work.set()
        self._now.set()

    async def _run(self) -> None:
        while True:
            await self._has_work.wait()
            if not self._now.is_set():
                try:
                    await asyncio.wait_for(self._now.wait(), self._interval)
                except asyncio.TimeoutError:
                    pass
            self._has_work.clear()
            self._now.clear()
            try:
                await self._flush()
            except Exception as exc:  # noqa: BLE001 - the journal never stops the service
                log.error("journal: write failed: %s", type(exc).__name__)
            if self._closing and not self._pending:
                return

    async def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        if not batch:
            return
        work: dict[str, JobRecord | None] = {}
        for job_id, source in batch.items():
            try:
                work[job_id] = source() if source is not None else None
            except Exception as exc:  # noqa: BLE001 - the journal never stops the service
                log.error("journal: cannot describe job %s: %s", job_id, type(exc).__name__)
        await asyncio.to_thread(self._write, work)

    def _write(self, work: dict[str, JobRecord | None]) -> None:
        for job_id, record in work.items():
            try:
                if record is None:
                    self.journal.remove(job_id)
                else:
                    self.journal.write(record)
                self._failed.discard(job_id)
            except OSError as exc:
                if job_id not in self._failed:  # one line per job while the trouble lasts
                    self._failed.add(job_id)
                    log.warning("journal: cannot write job %s to %s: %s", job_id, self.journal.folder,
                                exc.strerror or exc)
        try:
            self.journal.sync_folder()
        except OSError as exc:
            log.warning("journal: cannot sync %s: %s", self.journal.folder, exc.strerror or exc)

    async def close(self) -> None:
        """Write what is pending, then stop."""
        if self._closed:
            return
        self._closing = True
        self._has_work.set()
        self._now.set()
        if not self._task.done():
            await self._task
        self._closed = True
