"""Which part each connection of a file fetches, how many connections it opens, and the tail.

A file's parts wait in file order; each connection takes the next one. Three
decisions are made here, all from what was measured, never from guesses:

1. **How many connections, at once.** The first part goes alone until the
   server has answered it (one round trip: a server or cache that ignores
   ``Range`` must not send the whole file to every part). Then what the link
   did a moment ago (:mod:`.links`) decides: a link whose single connection
   was fast (a LAN, loopback) keeps one connection, which asks for several
   parts per request so the file arrives in order and is hashed from memory;
   one whose connections were each slow (a CDN that caps each one) gets
   ``max_connections`` at once. A link nobody knows yet is judged by the
   first connection's first bytes, in windows of 20 ms or 1 MiB: the first
   fast one (a warming connection is never fast by accident), one far below
   fast, or 60 ms of them decide; not rounds of probing. While parts wait
   and every open connection is slow, the rest are opened (the link may
   change).
2. **The slow tail.** Once every part is taken, an idle connection looks at
   the parts still running. A part whose connection is far slower than its
   peers (:data:`_SLOW` times) - or silent - is split where both halves would
   end together; the idle connection takes the second half, the slow one
   stops where the first half ends (its request is dropped, never a byte
   written twice). While parts still wait, such a part's rest goes to the
   front of the line instead, if a second or more of work is left on it. A
   silent connection keeps nothing: it is dropped and its rest raced on a
   fresh connection. A file with a single part gets a helper connection for
   this, so the last small files of a snapshot do not wait on one slow
   connection either.
3. **Under a bandwidth cap** the cap, not a connection, is what is slow:
   nothing is split while the cap keeps connections waiting.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .limit import RateLimit
from .links import LinkReport
from .parts import Part, PartState, take_following_parts
from .policy import TransferPolicy

__all__ = ["FileSchedule", "Stream"]

#: a connection this many times slower than the median of its peers is slow
_SLOW = 3.0
#: a connection that received nothing for this long (and ten times the link's usual wait
#: for a first byte) is silent: its part is raced on another connection. Longer than a
#: TCP retransmission or two, far shorter than a stall timeout.
_SILENT = 2.0
#: a split must save at least this long (seconds) to be worth a new request
_MIN_GAIN = 0.1
#: while parts wait, a slow connection's part is cut only with this much work left (seconds)
_LONG_REST = 1.0
#: the smallest second half worth a request of its own (bytes), unless the first is silent
_MIN_SPLIT = 64 << 10
#: speed is judged over the last this many seconds, and not before this much of it
_WINDOW = 1.0
_MIN_SPAN = 0.25
#: a connection's average speed counts once it ran this long and moved this much
_AVERAGE_SPAN = 0.1
_AVERAGE_BYTES = 256 << 10
#: a new link: its first connection's bytes are watched in windows of this long (or this
#: many bytes), for at most _PROBE_TIME, before the others open
_PROBE_WINDOW = 0.02
_PROBE_BYTES = 1 << 20
_PROBE_TIME = 0.06
#: how often the tail and the connection count are looked at again
_TICK = 0.1
#: parts a lone fast connection adds to each of its requests
_ALONE_PARTS = 7
#: under a bandwidth cap, one connection that gets this share of it is enough
_CAP_SHARE = 0.8


@dataclass(eq=False)
class Stream:
    """One part being fetched on one connection: how far it got, and how fast."""

    part: Part
    #: bytes of the part received so far end here (queued for the writer or written)
    position: int
    #: when the current request was sent, and when its first body byte came (loop time)
    sent: float
    first_byte: float | None = None
    first_position: int = 0
    #: the last time bytes came (loop time)
    progressed: float = 0.0
    #: set when the schedule gave the rest of the part to another connection
    abandoned: bool = False
    #: waiting for us - before a retry (backoff, the server's Retry-After), or for room in
    #: the writer's queue (the disk is slower): not silent, not slow
    pausing: bool = False
    task: asyncio.Future[None] | None = None
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def restart(self, now: float) -> None:
        """A new request for the rest of the part (after a retry)."""
        self.sent = self.progressed = now
        self.first_byte = None
        self.pausing = False
        self._samples.clear()

    def silent(self, now: float, first_byte: float | None) -> bool:
        """No byte for long: after some came (a stall), or well past the link's usual first byte."""
        if self.pausing:
            return False
        if self.first_byte is not None:
            return now - self.progressed >= max(_SILENT, 10 * (first_byte or 0.0))
        return first_byte is not None and now - self.sent >= max(_SILENT, 10 * first_byte)

    def advance(self, position: int, now: float) -> None:
        if self.first_byte is None:
            self.first_byte, self.first_position = now, self.position
            self._samples.append((now, self.position))
        self.position = position
        self.progressed = now
        if now - self._samples[-1][0] >= 0.05:
            self._samples.append((now, position))
            while len(self._samples) > 2 and self._samples[1][0] <= now - _WINDOW:
                self._samples.popleft()

    def speed(self, now: float) -> float | None:
        """Bytes/s over the last second or so; None until a quarter second of it is known."""
        if self.first_byte is None or not self._samples:
            return None
        base_time, base_position = self._samples[0]
        for when, where in self._samples:
            if when > now - _WINDOW:
                break
            base_time, base_position = when, where
        span = now - base_time
        if span < _MIN_SPAN:
            return None
        return (self.position - base_position) / span

    def average(self, now: float) -> float | None:
        """Bytes/s since the first byte, once enough came to tell (not a few packets)."""
        if self.first_byte is None:
            return None
        span, got = now - self.first_byte, self.position - self.first_position
        if span < _AVERAGE_SPAN or got < _AVERAGE_BYTES:
            return None
        return got / span



#: fetches one part on one connection, reporting through its stream
FetchPart = Callable[[Part, Stream], Awaitable[None]]


class FileSchedule:
    """Runs the connections of one file until every part is on disk (see the module docstring)."""

    def __init__(
        self,
        state: PartState,
        policy: TransferPolicy,
        link: LinkReport,
        fetch: FetchPart,
        limit: RateLimit | None = None,
    ) -> None:
        self.state = state
        self.policy = policy
        self.link = link
        self.fetch = fetch
        self.limit = limit
        self.loop = asyncio.get_running_loop()
        self.queue: deque[Part] = deque(sorted((p for p in state.parts if not p.finished), key=lambda p: p.start))
        self.running: list[Stream] = []
        self.handoff: deque[Part] = deque()
        self.opened = 0
        self.alone_and_fast = False
        self.splits = 0
        #: speeds of this file's connections that finished their part lately
        self._finished_speeds: deque[float] = deque(maxlen=16)
        #: does the server answer ranged requests with their range?
        self.ranges = link.ranges is not False
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        # One connection per part at most, and one more for the tail of a single-part file.
        wanted = max(len(self.queue), 2 if policy.split_tail else 1)
        self.slots = max(1, min(policy.max_connections, wanted))
        self._gates = [asyncio.Event() for _ in range(self.slots)]

    # ------------------------------------------------------------ running
    async def run(self) -> None:
        from .._aio import run_all

        if not self.queue:
            return
        self._open(1)
        await run_all([self._steer(), *(self._connection(gate) for gate in self._gates)])

    def _open(self, count: int) -> None:
        for gate in self._gates[self.opened:self.opened + count]:
            gate.set()
        self.opened = min(self.slots, self.opened + count)

    def _finished(self) -> bool:
        return not self.queue and not self.handoff and not self.running

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
        self._wake.set()

    def _next(self) -> Part | None:
        while self.queue:
            part = self.queue.popleft()
            if all(p is not part for p in self.state.parts):
                continue  # merged into the part before it
            if self.alone_and_fast and self.opened == 1:
                take_following_parts(self.state, self.queue, part, _ALONE_PARTS)
            return part
        return self.handoff.popleft() if self.handoff else None

    async def _connection(self, gate: asyncio.Event) -> None:
        await gate.wait()
        while True:
            part = self._next()
            if part is None:
                if self._finished():
                    await self._notify()
                    return
                async with self._changed:  # idle: wait for a part handed over, or the end
                    self._wake.set()
                    await self._changed.wait()
                continue
            await self._fetch(part)

    async def _fetch(self, part: Part) -> None:
        now = self.loop.time()
        stream = Stream(part, part.done, now, progressed=now)
        self.running.append(stream)
        task = asyncio.ensure_future(self.fetch(part, stream))
        stream.task = task
        try:
            await asyncio.wait({task})
        finally:
            if not task.done():  # we are being cancelled: so is the part
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            self.running.remove(stream)
            speed = stream.average(self.loop.time())
            if speed is not None and not stream.abandoned:
                self._finished_speeds.append(speed)
            await self._notify()
        if task.cancelled():
            if stream.abandoned:
                return  # its rest went to another connection
            raise asyncio.CancelledError()
        task.result()

    # ------------------------------------------------------------ steering
    async def _steer(self) -> None:
        """Open connections when they help; split the tail when a connection lags."""
        try:
            await self._open_connections()
            while not self._finished():
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), _TICK)
                except asyncio.TimeoutError:
                    pass
                if self._finished():
                    break
                self._ramp()
                await self._split_tail()
        finally:
            self._open(self.slots)  # whoever never started finds nothing left and returns

    async def _open_connections(self) -> None:
        ranges = self.state.ranges_ok
        if ranges is not None and not await asyncio.shield(ranges):
            self.ranges = False  # the first part streams the whole file; nothing to split
            return
        fast = self._fast()
        if fast is None:
            self._open(self.slots)
            return
        known = self.link.per_connection
        if known is None:
            known = await self._probe()
        if known is not None and known >= fast:
            self.alone_and_fast = True
        else:
            self._open(self.slots)

    def _fast(self) -> float | None:
        """Bytes/s above which one connection is enough (under a cap: most of the cap)."""
        fast = self.policy.fast_connection
        ceiling = self.limit.ceiling if self.limit is not None else None
        if fast is not None and ceiling is not None:
            fast = min(fast, ceiling * _CAP_SHARE)
        return fast

    async def _probe(self) -> float | None:
        """The first connection's speed on a new link: the best of short windows after its first byte.

        One fast window says the link is fast (a warming connection is slow at first,
        never fast by accident); a window far below fast, or :data:`_PROBE_TIME` of
        them, says it is not.
        """
        fast = self._fast() or 0.0
        best, window, started = 0.0, None, None
        while not self._finished():
            stream = self.running[0] if self.running else None
            now = self.loop.time()
            if stream is not None and stream.first_byte is not None:
                if window is None or window[2] is not stream:
                    window, started = (now, stream.position, stream), started or now
                elif now - window[0] >= _PROBE_WINDOW or stream.position - window[1] >= _PROBE_BYTES:
                    speed = (stream.position - window[1]) / max(now - window[0], 1e-4)
                    best = max(best, speed)
                    window = (now, stream.position, stream)
                    if best >= fast or speed < fast / 4 or now - (started or now) >= _PROBE_TIME:
                        return best
            await asyncio.sleep(0.002)
        return best or None

    def _ramp(self) -> None:
        """Parts still wait and each open connection is slow: open the rest."""
        fast = self._fast()
        if not self.queue or self.opened >= self.slots or fast is None:
            return
        now = self.loop.time()
        speeds = [s for s in (stream.speed(now) for stream in self.running) if s is not None]
        if speeds and max(speeds) < fast:
            self.alone_and_fast = False
            self._open(self.slots)

    async def _split_tail(self) -> None:
        if not (self.policy.split_tail and self.ranges) or not self.running:
            return
        if self.limit is not None and self.limit.busy():
            return
        if self.queue:
            # Parts still wait: the rest of a part whose connection is far slower than the
            # others goes to the front of the line; the next connection free takes it, and the
            # slow one (its request ends at the cut, so its connection closes) takes the next.
            part = self._split(self.loop.time(), waiting=True)
            if part is not None:
                self.queue.appendleft(part)
            return
        idle = self.slots - len(self.running) - len(self.handoff)
        while idle > 0:
            part = self._split(self.loop.time())
            if part is None:
                return
            self.handoff.append(part)
            if self.opened < self.slots and len(self.running) + len(self.handoff) > self.opened:
                self._open(1)
            idle -= 1
            await self._notify()

    def _split(self, now: float, waiting: bool = False) -> Part | None:
        """Cut the rest of the part that lags most; return its second half (None: nothing lags).

        ``waiting``: other parts still wait for a connection, so only a part with more
        than :data:`_LONG_REST` of work left on a connection slower than the others
        running now is cut.
        """
        speeds = {stream: stream.speed(now) for stream in self.running}
        first_byte = self.link.first_byte
        best: tuple[float, Stream, int] | None = None
        for stream, speed in speeds.items():
            rest = stream.part.end - stream.position
            if rest <= 0 or stream.abandoned or stream.pausing:
                continue
            if stream.silent(now, first_byte):
                keep, gain = 0, float("inf")  # race the rest on a fresh connection
            else:
                peers = [v for s, v in speeds.items() if s is not stream and v]
                if waiting and len(peers) < 3:
                    continue
                if not waiting:
                    peers.extend(self._finished_speeds)
                typical = statistics.median(peers) if peers else self.link.per_connection
                if speed is None or not typical or speed * _SLOW >= typical:
                    continue
                if waiting and rest < speed * _LONG_REST:
                    continue
                # cut where both would end together
                keep = int(rest * speed / (speed + typical))
                gain = rest / max(speed, 1.0) - ((rest - keep) / typical + (first_byte or 0.0))
                if gain < _MIN_GAIN or rest - keep < _MIN_SPLIT:
                    continue
            if best is None or gain > best[0]:
                best = (gain, stream, keep)
        if best is None:
            return None
        _, stream, keep = best
        cut = stream.position + keep
        second = Part(cut, stream.part.end, cut)
        stream.part.end = cut
        self.state.parts.append(second)
        self.splits += 1
        if keep == 0:
            stream.abandoned = True
            if stream.task is not None:
                stream.task.cancel()
        return second
