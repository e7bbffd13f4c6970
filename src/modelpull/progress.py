"""Progress events and the aggregator that makes them honest.

Providers and the transfer engine only update a :class:`ProgressTracker`
(bytes present per file or layer). :class:`ProgressReporter` turns the
tracker's state into :class:`DownloadProgress` events: totals from the plan,
``downloaded_bytes`` and ``percent`` that never decrease, at most ~10 events a
second and at least one a second while a download runs.

Speed and ETA are measured here, once, so every client shows the same
figures. Speed counts only the bytes fetched since they started to flow
(connection setup and bytes already on disk do not dilute it), over the last
:attr:`ProgressReporter.SPEED_WINDOW` seconds, smoothed; an ETA is given only
once bytes have flowed for :attr:`ProgressReporter.ETA_WARMUP` seconds (a
first guess from a fraction of a second is off by orders of magnitude), and
none while the transfer stalls.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

__all__ = ["DownloadProgress", "DownloadStatus", "FileProgress", "ProgressReporter", "ProgressTracker"]


class DownloadStatus(str, Enum):
    """Lifecycle of a download; ``COMPLETE`` and ``ERROR`` are terminal."""

    STARTING = "starting"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    COMPLETE = "complete"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass
class FileProgress:
    """Bytes present of one file or layer of a download."""

    name: str
    size: int | None
    present: int


@dataclass
class DownloadProgress:
    """One progress update.

    The first five fields match the library modelpull replaces, in order.
    ``downloaded_bytes`` counts bytes present (already local ones included),
    ``total_bytes`` is the size of the whole download. ``speed_bps`` is the
    current speed (on ``COMPLETE``: the average over the bytes fetched, None
    when nothing was fetched); ``eta_seconds`` is None until it means
    something. ``files``, when set, is every file or layer with its bytes
    present (on the first event, on the last, and about once a second between).
    """

    status: DownloadStatus
    message: str
    percent: float | None = None
    downloaded_bytes: int | None = None
    total_bytes: int | None = None
    error_code: str | None = None
    path: str | None = None
    speed_bps: float | None = None
    eta_seconds: float | None = None
    current: str | None = None
    files: list[FileProgress] | None = field(default=None, repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in (DownloadStatus.COMPLETE, DownloadStatus.ERROR)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


class ProgressTracker:
    """Bytes present per file or layer; each counter only moves forward."""

    def __init__(self, total: int | None = None) -> None:
        self._present: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._fixed_total = total
        self._active: list[str] = []
        self._current: str | None = None
        self.verifying: str | None = None
        self.message: str | None = None

    @property
    def current(self) -> str | None:
        """The file or layer bytes are arriving for (the latest one still active)."""
        return self._active[-1] if self._active else self._current

    @current.setter
    def current(self, key: str | None) -> None:
        self._current = key

    def begin(self, key: str) -> None:
        """Bytes of ``key`` start arriving."""
        self._active.append(key)

    def end(self, key: str) -> None:
        if key in self._active:
            self._active.remove(key)

    def declare(self, key: str, size: int | None, present: int = 0) -> None:
        """Announce a file or layer (its size may become known only now)."""
        if size is not None:
            self._sizes[key] = max(size, self._sizes.get(key, 0))
        self.update(key, present)

    def update(self, key: str, present: int) -> None:
        """Record that ``present`` bytes of ``key`` are on disk (never decreases)."""
        if present > self._present.get(key, -1):
            self._present[key] = present

    def add(self, key: str, count: int) -> None:
        self._present[key] = self._present.get(key, 0) + count

    def present_of(self, key: str) -> int:
        return self._present.get(key, 0)

    def files(self) -> list[FileProgress]:
        """Every file or layer announced so far, in order, with its bytes present."""
        keys = dict.fromkeys([*self._present, *self._sizes])
        return [FileProgress(key, self._sizes.get(key), self._present.get(key, 0)) for key in keys]

    @property
    def done(self) -> int:
        return sum(self._present.values())

    @property
    def total(self) -> int | None:
        if self._fixed_total is not None:
            return self._fixed_total
        if not self._sizes:
            return None
        return sum(self._sizes.values())


class ProgressReporter:
    """Builds monotonic, throttled events from a tracker, with smoothed speed and ETA."""

    MIN_INTERVAL = 0.1
    HEARTBEAT = 1.0
    #: speed is the rate over the last this many seconds...
    SPEED_WINDOW = 5.0
    #: ...once bytes have flowed for at least this long
    SPEED_MIN_SPAN = 0.5
    #: time constant (s) of the exponential smoothing applied to the windowed rate
    SPEED_SMOOTHING = 2.0
    #: no ETA before bytes have flowed this long
    ETA_WARMUP = 2.0
    #: ``files`` is attached at most this often between the first and the last event
    FILES_INTERVAL = 1.0

    def __init__(self, tracker: ProgressTracker, clock: Callable[[], float] = time.monotonic) -> None:
        self.tracker = tracker
        self._clock = clock
        self._created = clock()
        self._initial_done = tracker.done
        self._max_done = 0
        self._max_percent = 0.0
        self._max_total = 0
        self._last_emit = 0.0
        self._last_key: tuple[Any, ...] | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._flow_start: float | None = None
        self._last_look = self._created
        self._smoothed: float | None = None
        self._smoothed_at = 0.0
        self._files_at: float | None = None

    def _numbers(self) -> tuple[int, int | None, float]:
        done = max(self._max_done, self.tracker.done)
        total = self.tracker.total
        if total is not None:
            total = max(total, self._max_total, done)
            self._max_total = total
            percent = 100.0 * done / total if total else 0.0
            # Only a finished download may say 100 %.
            percent = min(percent, 99.99) if done < total else percent
        else:
            percent = 0.0
        percent = max(percent, self._max_percent)
        self._max_done, self._max_percent = done, percent
        return done, total, percent

    def _speed(self, now: float, done: int) -> float | None:
        """Smoothed bytes/s since bytes started to flow; None until measurable."""
        if self._flow_start is None:
            if done <= self._initial_done:
                self._last_look = now
                return None
            # The first bytes arrived since the last look: measure from that look,
            # not from the plan (connection setup is not transfer time).
            self._flow_start = self._last_look
            self._samples.append((self._last_look, self._initial_done))
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.SPEED_WINDOW:
            self._samples.popleft()
        first_t, first_done = self._samples[0]
        span = now - first_t
        if now - self._flow_start < self.SPEED_MIN_SPAN or span <= 0:
            return None
        rate = (done - first_done) / span
        if self._smoothed is None:
            self._smoothed = rate
        else:
            weight = 1.0 - math.exp(-(now - self._smoothed_at) / self.SPEED_SMOOTHING)
            self._smoothed += weight * (rate - self._smoothed)
        self._smoothed_at = now
        return self._smoothed

    def _eta(self, now: float, speed: float | None, done: int, total: int | None) -> float | None:
        if total is None:
            return None
        if done >= total:
            return 0.0
        if speed is None or speed <= 0 or self._flow_start is None:
            return None
        if now - self._flow_start < self.ETA_WARMUP:
            return None
        recent = self._samples[-1][1] - self._samples[0][1] if len(self._samples) > 1 else 0
        if recent <= 0:  # stalled: nothing arrived in the whole window
            return None
        return max(0.0, (total - done) / speed)

    def _files(self, now: float, force: bool) -> list[FileProgress] | None:
        if not force and self._files_at is not None and now - self._files_at < self.FILES_INTERVAL:
            return None
        self._files_at = now
        return self.tracker.files()

    def event(
        self,
        status: DownloadStatus,
        message: str,
        *,
        force: bool = False,
        path: str | None = None,
        error_code: str | None = None,
    ) -> DownloadProgress | None:
        """An event for the current state, or None when throttling says wait."""
        now = self._clock()
        done, total, percent = self._numbers()
        speed = self._speed(now, done)
        key = (status, message, done, total, self.tracker.current)
        if not force:
            since = now - self._last_emit
            if since < self.MIN_INTERVAL:
                return None
            if key == self._last_key and since < self.HEARTBEAT:
                return None
        self._last_emit, self._last_key = now, key
        eta = self._eta(now, speed, done, total)
        return DownloadProgress(
            status=status,
            message=message,
            percent=round(percent, 2),
            downloaded_bytes=done,
            total_bytes=total,
            error_code=error_code,
            path=path,
            speed_bps=round(speed, 1) if speed is not None else None,
            eta_seconds=round(eta, 1) if eta is not None else None,
            current=self.tracker.current,
            files=self._files(now, force),
        )

    def complete(self, message: str, path: str) -> DownloadProgress:
        """The terminal event; ``speed_bps`` is the average over the bytes fetched (None if none)."""
        now = self._clock()
        done = max(self._max_done, self.tracker.done)
        total = max(self.tracker.total or 0, self._max_total, done)
        fetched = done - self._initial_done
        average = None
        if fetched > 0 and now > self._created:
            average = round(fetched / (now - self._created), 1)
        files = self.tracker.files()
        for item in files:
            if item.size is not None:
                item.present = max(item.present, item.size)
        return DownloadProgress(
            status=DownloadStatus.COMPLETE,
            message=message,
            percent=100.0,
            downloaded_bytes=total,
            total_bytes=total,
            path=path,
            speed_bps=average,
            eta_seconds=0.0,
            current=None,
            files=files,
        )

    def error(self, code: str, message: str) -> DownloadProgress:
        total = self.tracker.total
        done = max(self._max_done, self.tracker.done)
        return DownloadProgress(
            status=DownloadStatus.ERROR,
            message=message,
            percent=round(self._max_percent, 2),
            downloaded_bytes=done,
            total_bytes=total,
            error_code=code,
            current=self.tracker.current,
            files=self.tracker.files() or None,
        )
