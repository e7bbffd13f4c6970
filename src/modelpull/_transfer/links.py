"""What a link did a moment ago: per origin, the speed of one connection, Range support, latency.

The scheduler asks before it opens a file's connections: a link whose single
connection was fast stays on one connection (the file arrives in order and is
hashed from memory), one whose connections were each slow gets
``max_connections`` at once instead of being probed again; the time to a first
byte tells how long a silent connection may wait before its part is raced.
Whether a server honours ``Range`` is remembered only to avoid splitting a
part on a server that ignores it: each file still waits for its first answer
before its other parts go (a pull-through cache takes ranges for the blobs it
holds and not for the others, on the same address). What is known is
forgotten after :data:`MEMORY` seconds: links change.

Shared by every download in the process (the service's jobs learn from each
other). Keyed by scheme, host and port of the URL the engine asks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from yarl import URL

__all__ = ["LINKS", "MEMORY", "LinkMemory", "LinkReport"]

#: seconds a link's figures are trusted
MEMORY = 60.0
#: weight of a new per-connection speed against what was known (a moving average)
_WEIGHT = 0.5


@dataclass(frozen=True)
class LinkReport:
    """What is known about one origin (None: not known, or too old)."""

    #: bytes/s one connection received, recently
    per_connection: float | None
    #: did the server honour Range?
    ranges: bool | None
    #: seconds from a request to its first body byte
    first_byte: float | None


class LinkMemory:
    def __init__(self, memory: float = MEMORY) -> None:
        self.memory = memory
        self._lock = threading.Lock()
        self._rates: dict[tuple[str, str, int], tuple[float, float]] = {}
        self._ranges: dict[tuple[str, str, int], tuple[bool, float]] = {}
        self._latency: dict[tuple[str, str, int], tuple[float, float]] = {}

    @staticmethod
    def _key(url: str | URL) -> tuple[str, str, int]:
        parsed = url if isinstance(url, URL) else URL(url, encoded=True)
        return (parsed.scheme, parsed.host or "", parsed.port or 0)

    def report(self, url: str | URL) -> LinkReport:
        key = self._key(url)
        horizon = time.monotonic() - self.memory
        with self._lock:
            rate = self._rates.get(key)
            ranges = self._ranges.get(key)
            latency = self._latency.get(key)
        return LinkReport(
            rate[0] if rate and rate[1] >= horizon else None,
            ranges[0] if ranges and ranges[1] >= horizon else None,
            latency[0] if latency and latency[1] >= horizon else None,
        )

    def note_ranges(self, url: str | URL, honoured: bool) -> None:
        with self._lock:
            self._ranges[self._key(url)] = (honoured, time.monotonic())

    def note_speed(self, url: str | URL, per_connection: float) -> None:
        """One connection's speed over a while (not a burst)."""
        if per_connection > 0:
            self._average(self._rates, url, per_connection)

    def note_first_byte(self, url: str | URL, seconds: float) -> None:
        self._average(self._latency, url, seconds)

    def _average(self, table: dict[tuple[str, str, int], tuple[float, float]], url: str | URL,
                 value: float) -> None:
        """Fold ``value`` into what ``table`` knows of the URL's origin (a moving average)."""
        key = self._key(url)
        now = time.monotonic()
        with self._lock:
            known = table.get(key)
            if known is not None and known[1] >= now - self.memory:
                value = known[0] * (1 - _WEIGHT) + value * _WEIGHT
            table[key] = (value, now)

    def forget(self) -> None:
        with self._lock:
            self._rates.clear()
            self._ranges.clear()
            self._latency.clear()


#: the process's memory of its links
LINKS = LinkMemory()
