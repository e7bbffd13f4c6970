"""A bandwidth cap shared by every connection (and every download) that is given it.

:class:`RateLimit` paces bytes as they are taken off the sockets: a connection
asks for ``n`` bytes' worth of time (:meth:`RateLimit.take`) before it counts
and queues a chunk, and waits when it is ahead of the cap. Reading less from a
socket makes TCP slow the sender down, so the link itself carries about the
cap, not only what modelpull reports. One object shared by all the
connections of a download caps the download; one shared by the jobs of a
service (``parent``) caps the service, and its rate may change while they run.

The allowance is a token bucket that may go into debt: a chunk is taken
whole when the bucket is not in debt (a chunk may be larger than the bucket),
and everyone waits while it is, until the cap has paid it off. A limiter idle
for a while keeps at most :data:`BURST` seconds of allowance, so the rate over
any few seconds stays within a few percent of the cap; waiting connections
look again every :data:`_RECHECK` seconds, so a changed rate applies at once.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time

from ..errors import InvalidOption

__all__ = ["BURST", "RateLimit", "parse_rate"]

#: seconds of allowance a limiter that was idle may spend at once
BURST = 0.05
#: a waiting connection looks at the cap again at least this often (a changed rate applies)
_RECHECK = 0.1
#: below this a cap is not a cap but a typo (bytes/s)
MIN_RATE = 1024

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}
_RATE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmg]i?)?\s*(?:b|b/s|bps)?\s*", re.IGNORECASE)


def parse_rate(value: object) -> float | None:
    """Bytes per second from ``20M``, ``500k``, ``1.5G``, ``20MiB`` or a number; None or 0 = no cap.

    ``k``/``M``/``G`` are powers of 1000, as modelpull shows speeds (``20M`` is
    20 MB/s); ``Ki``/``Mi``/``Gi`` are powers of 1024 (curl's ``20M`` is ``20Mi``).
    """
    if value is None or value == "" or value is False:
        return None
    if isinstance(value, bool):
        raise InvalidOption(f"a speed limit must be a number of bytes per second, got {value!r}")
    if isinstance(value, (int, float)):
        rate = float(value)
    elif isinstance(value, str):
        match = _RATE.fullmatch(value)
        if match is None:
            raise InvalidOption(
                f"cannot read the speed limit {value[:40]!r}; give bytes per second, e.g. 20M "
                "(20 MB/s), 500k or 20Mi"
            )
        rate = float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    else:
        raise InvalidOption(f"a speed limit must be a number of bytes per second, got {value!r}")
    if math.isnan(rate) or math.isinf(rate) or rate < 0:
        raise InvalidOption(f"a speed limit must be a positive number of bytes per second, got {value!r}")
    if rate == 0:
        return None
    if rate < MIN_RATE:
        raise InvalidOption(f"a speed limit of {rate:g} bytes/s is too low; the least is {MIN_RATE} bytes/s")
    return rate


class RateLimit:
    """A cap of ``rate`` bytes per second (None: no cap) over everyone who takes from it.

    ``parent`` is a second cap the same bytes also count against (a service's
    cap over a download's own). Safe to share between tasks, event loops and
    threads; :attr:`rate` may be changed at any time and waiting connections
    follow within :data:`_RECHECK` seconds.
    """

    def __init__(self, rate: float | str | None = None, parent: RateLimit | None = None) -> None:
        self._lock = threading.Lock()
        self._rate = parse_rate(rate)
        #: allowance in bytes; below zero, bytes were given out ahead of the cap and
        #: everyone waits until the debt is paid
        self._allowance = 0.0
        self._refilled = time.monotonic()
        self._waiting = 0
        self.parent = parent

    @property
    def rate(self) -> float | None:
        return self._rate

    @rate.setter
    def rate(self, value: float | str | None) -> None:
        rate = parse_rate(value)
        with self._lock:
            self._refill(time.monotonic())
            self._rate = rate
            if not rate:
                self._allowance = 0.0

    @property
    def active(self) -> bool:
        """Does this cap (or its parent's) limit anything?"""
        return bool(self._rate) or (self.parent is not None and self.parent.active)

    @property
    def ceiling(self) -> float | None:
        """The lowest cap in the chain (None: no cap)."""
        rates = [r for r in (self._rate, self.parent.ceiling if self.parent else None) if r]
        return min(rates) if rates else None

    def busy(self) -> bool:
        """Is someone waiting for allowance right now (the cap is what limits the speed)?"""
        with self._lock:
            limited = bool(self._rate) and (self._waiting > 0 or self._allowance < 0)
        return limited or (self.parent is not None and self.parent.busy())

    def _refill(self, now: float) -> None:
        if self._rate:
            self._allowance = min(self._rate * BURST, self._allowance + (now - self._refilled) * self._rate)
        self._refilled = now

    def _try(self, count: int) -> float:
        """Take ``count`` bytes if the cap is not in debt (0.0); else the seconds to wait first."""
        with self._lock:
            rate = self._rate
            if not rate:
                return 0.0
            self._refill(time.monotonic())
            if self._allowance >= 0:
                self._allowance -= count
                return 0.0
            return min(_RECHECK, -self._allowance / rate)

    async def take(self, count: int) -> None:
        """Wait until ``count`` more bytes fit under the cap (and under its parent's)."""
        wait = self._try(count)
        if wait:
            with self._lock:
                self._waiting += 1
            try:
                while wait:
                    await asyncio.sleep(wait)
                    wait = self._try(count)
            finally:
                with self._lock:
                    self._waiting -= 1
        if self.parent is not None:
            await self.parent.take(count)

    def __repr__(self) -> str:
        return f"RateLimit(rate={self._rate!r}, parent={self.parent!r})"
