"""Progress events and the aggregator that makes them honest.

Providers and the transfer engine only update a :class:`ProgressTracker`
(bytes present per file or layer). :class:`ProgressReporter` turns the
tracker's state into :class:`DownloadProgress` events: totals from the plan,
``downloaded_bytes`` and ``percent`` that never decrease, at most ~10 events a
second and at least one a second while a download runs.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

__all__ = ["DownloadProgress", "DownloadStatus", "ProgressReporter", "ProgressTracker"]


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
class DownloadProgress:
    """One progress update.

    The first five fields match the library modelpull replaces, in order.
    ``downloaded_bytes`` counts bytes present (already local ones included),
    ``total_bytes`` is the size of the whole download.
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
    """Builds monotonic, throttled events from a tracker."""

    MIN_INTERVAL = 0.1
    HEARTBEAT = 1.0
    SPEED_WINDOW = 5.0

    def __init__(self, tracker: ProgressTracker) -> None:
        self.tracker = tracker
        self._max_done = 0
        self._max_percent = 0.0
        self._max_total = 0
        self._last_emit = 0.0
        self._last_key: tuple[Any, ...] | None = None
        self._samples: deque[tuple[float, int]] = deque()

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
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.SPEED_WINDOW:
            self._samples.popleft()
        first_t, first_done = self._samples[0]
        if now - first_t < 0.2:
            return None
        return (done - first_done) / (now - first_t)

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
        now = time.monotonic()
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
        eta = None
        if speed and speed > 0 and total is not None:
            eta = max(0.0, (total - done) / speed)
        elif total is not None and done >= total:
            eta = 0.0
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
        )

    def complete(self, message: str, path: str) -> DownloadProgress:
        done = max(self._max_done, self.tracker.done)
        total = max(self.tracker.total or 0, self._max_total, done)
        return DownloadProgress(
            status=DownloadStatus.COMPLETE,
            message=message,
            percent=100.0,
            downloaded_bytes=total,
            total_bytes=total,
            path=path,
            speed_bps=None,
            eta_seconds=0.0,
            current=None,
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
        )
