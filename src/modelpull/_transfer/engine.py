"""Ranged, parallel, resumable, verified HTTP downloads.

One file at a time goes like this:

1. Already at its final path with the right size: nothing to do.
2. Take the file's lock (another download of the same file, in this process
   or another, holds it: wait, mirroring its progress from its part state).
3. Load the part state kept beside the partial file, or split the file into
   parts (the policy) and reserve its space (``disk_full`` before any byte).
4. Fetch every unfinished part as its own ``Range`` request. A part whose
   connection drops, stalls or gets a 5xx/429 is retried from the byte where it
   stopped, with backoff (or the server's ``Retry-After``); only attempts that
   make no progress count against ``max_retries``.
5. Verify the whole file against its digest, then rename it into place. A
   mismatch discards the partial (``checksum_mismatch``); nothing is published.

Credentials come from an :class:`~modelpull._transfer.auth.Auth` that only
gives them to their own host; redirects are followed here, by hand, so an
``Authorization`` header never reaches another host.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from filelock import FileLock, Timeout
from yarl import URL

from .._aio import run_all
from ..errors import (
    AuthRequired,
    ChecksumMismatch,
    ConnectionFailed,
    DiskFull,
    IncompleteTransfer,
    ModelNotFound,
    ModelpullError,
    ServerError,
    TransferTimeout,
)
from ..progress import ProgressTracker
from .auth import Auth, NoAuth
from .hashing import HashCancelled, check_digest, hash_fd_range, hex_of, new_hasher
from .policy import TransferPolicy

log = logging.getLogger("modelpull.transfer")

_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 10
#: received bytes are written (and count as resumable) every this many bytes per
#: connection, or after this long, whichever comes first
_FLUSH_BYTES = 1 << 20
_FLUSH_INTERVAL = 0.05
#: pwritev takes at most IOV_MAX (1024 on Linux) buffers
_MAX_IOVEC = 512
#: received bytes waiting for the writer thread before the connections pause
_MAX_QUEUED = 16 << 20
#: bytes the hasher reads back from disk at a time (between chunks from memory)
_CATCH_UP_STEP = 32 << 20
#: written bytes waiting for the hasher in memory: in-order bytes wait for room, bytes
#: ahead of the prefix are read back from disk later
_MAX_HASH_QUEUE = 16 << 20
#: when the speed of a file's first connection is first judged, then how often again
_RAMP_FIRST = 0.1
_RAMP_INTERVAL = 0.2
#: connections are multiplied by this while each is slow
_RAMP_FACTOR = 4
#: files up to this size are written and hashed on the event loop, without threads
_SMALL_FILE = 1 << 20
#: parts a lone fast connection adds to each of its requests
_ALONE_PARTS = 7
#: how much a response may buffer before reading pauses (aiohttp's default is 64 KiB)
_READ_BUFFER = 1 << 20
STATE_SUFFIX = ".parts.json"


@dataclass
class FileTransfer:
    """One file to fetch: where from, where to, how big, and its digest."""

    url: str
    dest: Path
    size: int
    digest: str
    key: str
    partial: Path | None = None
    lock: Path | None = None
    #: a file already at ``dest`` with the right size counts as done
    trust_existing: bool = True

    def __post_init__(self) -> None:
        check_digest(self.digest)
        if self.partial is None:
            self.partial = self.dest.with_name(self.dest.name + ".incomplete")
        if self.lock is None:
            self.lock = self.partial.with_name(self.partial.name + ".lock")

    @property
    def state_path(self) -> Path:
        assert self.partial is not None
        return self.partial.with_name(self.partial.name + STATE_SUFFIX)


@dataclass
class _Part:
    start: int
    end: int
    done: int  # absolute offset: bytes [start, done) are on disk

    @property
    def finished(self) -> bool:
        return self.done >= self.end


@dataclass
class _State:
    digest: str
    size: int
    parts: list[_Part] = field(default_factory=list)
    #: bytes received so far (on disk or about to be written); drives progress
    received: int = 0
    #: resolved by the first response of a multi-part fetch: does the server honour Range?
    ranges_ok: asyncio.Future[bool] | None = field(default=None, compare=False)

    @property
    def present(self) -> int:
        return sum(p.done - p.start for p in self.parts)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "digest": self.digest,
                "size": self.size,
                "parts": [[p.start, p.end, p.done] for p in self.parts],
            }
        )

    @classmethod
    def load(cls, path: Path, digest: str, size: int) -> _State | None:
        try:
            raw = json.loads(path.read_text())
            if raw.get("version") != 1 or raw["digest"] != digest or raw["size"] != size:
                return None
            parts = [_Part(int(s), int(e), int(d)) for s, e, d in raw["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        covered = 0
        for part in sorted(parts, key=lambda p: p.start):
            if part.start != covered or not part.start <= part.done <= part.end:
                return None
            covered = part.end
        if covered != size:
            return None
        return cls(digest, size, parts)


def _merge_following_parts(state: _State, part: _Part) -> None:
    """The server ignores Range: ``part`` streams on to the end of the file, alone."""
    dropped = [p for p in state.parts if p.start > part.start]
    state.received -= sum(p.done - p.start for p in dropped)
    state.parts = [p for p in state.parts if p.start <= part.start]
    part.end = state.size


@dataclass
class _Ramp:
    """How many connections a file has open, and whether its only one is fast."""

    opened: int = 1
    alone_and_fast: bool = False


def _take_following_parts(state: _State, queue: deque[_Part], part: _Part, count: int) -> None:
    """Let ``part``'s request also cover up to ``count`` untouched parts queued after it."""
    while count and queue and queue[0].start == part.end and queue[0].done == queue[0].start:
        following = queue.popleft()
        state.parts = [p for p in state.parts if p is not following]
        part.end = following.end
        count -= 1


def present_bytes(transfer: FileTransfer) -> int:
    """Bytes of ``transfer`` already on disk: final file or resumable partial."""
    try:
        if transfer.trust_existing and transfer.dest.stat().st_size == transfer.size:
            return transfer.size
    except OSError:
        pass
    state = _State.load(transfer.state_path, transfer.digest, transfer.size)
    return state.present if state else 0


class _Retry(Exception):
    """A part attempt failed in a way worth retrying; ``error`` is what we report if not."""

    def __init__(self, error: ModelpullError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


#: Maps an unexpected HTTP response to a typed error (provider-specific wording).
ErrorForResponse = Callable[[aiohttp.ClientResponse, str], ModelpullError | None]


def _describe(url: URL) -> str:
    return str(url.with_query(None).with_fragment(None))


class TransferEngine:
    """Fetches :class:`FileTransfer` objects and reports bytes to a tracker."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: TransferPolicy,
        tracker: ProgressTracker,
        auth: Auth | None = None,
        error_for_response: ErrorForResponse | None = None,
    ) -> None:
        self.session = session
        self.policy = policy
        self.tracker = tracker
        self.auth: Auth = auth or NoAuth()
        self.error_for_response = error_for_response

    # ------------------------------------------------------------------ files

    async def fetch_all(self, transfers: Iterable[FileTransfer]) -> None:
        """Fetch every transfer, ``max_parallel_files`` at a time; first failure stops all."""
        limit = asyncio.Semaphore(self.policy.max_parallel_files)

        async def one(transfer: FileTransfer) -> None:
            async with limit:
                await self.fetch(transfer)

        await run_all(one(t) for t in transfers)

    async def fetch(self, transfer: FileTransfer) -> None:
        key = transfer.key
        if self._published(transfer):
            self.tracker.update(key, transfer.size)
            return
        assert transfer.partial is not None and transfer.lock is not None
        transfer.partial.parent.mkdir(parents=True, exist_ok=True)
        transfer.dest.parent.mkdir(parents=True, exist_ok=True)
        lock = await self._acquire(transfer)
        try:
            if self._published(transfer):  # someone else finished it while we waited
                self.tracker.update(key, transfer.size)
                return
            await self._fetch_locked(transfer)
        finally:
            lock.release()

    @staticmethod
    def _published(transfer: FileTransfer) -> bool:
        if not transfer.trust_existing:
            return False
        try:
            return transfer.dest.stat().st_size == transfer.size
        except OSError:
            return False

    async def _acquire(self, transfer: FileTransfer) -> FileLock:
        assert transfer.lock is not None
        lock = FileLock(str(transfer.lock))
        while True:
            try:
                lock.acquire(timeout=0)
                return lock
            except Timeout:
                # Another download holds this file: show its progress as ours.
                self.tracker.current = transfer.key
                self.tracker.update(transfer.key, present_bytes(transfer))
                await asyncio.sleep(0.2)

    async def _fetch_locked(self, transfer: FileTransfer) -> None:
        assert transfer.partial is not None
        state = _State.load(transfer.state_path, transfer.digest, transfer.size)
        fresh = state is None or not transfer.partial.exists()
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0)
        fd = os.open(transfer.partial, flags, 0o644)
        try:
            if fresh:
                state = _State(
                    transfer.digest,
                    transfer.size,
                    [_Part(s, e, s) for s, e in self.policy.split(transfer.size)],
                )
                self._reserve(fd, transfer)
                self._save_state(transfer, state)
            assert state is not None
            state.received = state.present
            self.tracker.update(transfer.key, state.received)
            # A small file is written and hashed right on the event loop: two
            # threads per file would cost more than they save.
            writer = _DiskWriter(transfer, fd, state, threaded=transfer.size > _SMALL_FILE)
            try:
                await self._fetch_parts(transfer, state, writer)
                await self._verify(transfer, writer)
            finally:
                writer.close()  # queued bytes land on disk before the descriptor closes
        finally:
            os.close(fd)
        os.replace(transfer.partial, transfer.dest)
        transfer.state_path.unlink(missing_ok=True)

    def _reserve(self, fd: int, transfer: FileTransfer) -> None:
        try:
            if transfer.size and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, transfer.size)
            else:
                os.ftruncate(fd, transfer.size)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFull(
                    f"no room for {transfer.key} ({transfer.size} bytes) in "
                    f"{transfer.partial.parent if transfer.partial else transfer.dest.parent}; "
                    "free some space and run the download again"
                ) from None
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                os.ftruncate(fd, transfer.size)
            else:
                raise

    def _save_state(self, transfer: FileTransfer, state: _State) -> None:
        tmp = transfer.state_path.with_name(transfer.state_path.name + ".tmp")
        try:
            tmp.write_text(state.to_json())
            os.replace(tmp, transfer.state_path)
        except OSError as exc:
            log.debug("could not save part state for %s: %s", transfer.key, exc)

    async def _fetch_parts(
        self, transfer: FileTransfer, state: _State, writer: _DiskWriter
    ) -> None:
        pending = [p for p in state.parts if not p.finished]
        if not pending:
            return
        stop = asyncio.Event()

        async def save_periodically() -> None:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.policy.state_interval)
                except asyncio.TimeoutError:
                    pass
                self._save_state(transfer, state)

        saver = asyncio.ensure_future(save_periodically())
        if len(pending) > 1:
            # The first response tells whether the server honours Range; until it
            # does, the other parts wait (a server or cache that ignores Range would
            # send the whole file to every part).
            state.ranges_ok = asyncio.get_running_loop().create_future()
        queue = deque(sorted(pending, key=lambda p: p.start))
        connections = max(1, min(self.policy.max_connections, len(pending)))
        # Connection i starts when gate i opens: the first at once, the others
        # when ramp() decides that more connections would be faster.
        gates = [asyncio.Event() for _ in range(connections)]
        gates[0].set()

        ramp = _Ramp()

        async def connection(gate: asyncio.Event) -> None:
            await gate.wait()
            while queue:
                part = queue.popleft()
                if all(p is not part for p in state.parts):
                    continue  # merged into the part before it
                if ramp.alone_and_fast:
                    _take_following_parts(state, queue, part, _ALONE_PARTS)
                await self._run_part(transfer, state, part, writer)

        async def ramp_up() -> None:
            try:
                if state.ranges_ok is not None and not await asyncio.shield(state.ranges_ok):
                    return
                await self._ramp_up(state, queue, gates, ramp)
            finally:
                for gate in gates:  # whoever is left finds the queue empty and returns
                    gate.set()

        try:
            await run_all([ramp_up(), *(connection(gate) for gate in gates)])
        finally:
            stop.set()
            saver.cancel()
            await asyncio.gather(saver, return_exceptions=True)
            self._save_state(transfer, state)

    async def _ramp_up(
        self, state: _State, queue: deque[_Part], gates: list[asyncio.Event], ramp: _Ramp
    ) -> None:
        """Open more connections (x4 each time) while each one is slower than ``fast_connection``.

        One connection that is already fast (a LAN, loopback) keeps the file in
        order, so it is hashed from memory as it arrives, and takes several
        parts per request; slow connections (a CDN that caps each one) are
        multiplied up to ``max_connections``.
        """
        fast = self.policy.fast_connection
        if fast is None:
            for gate in gates:
                gate.set()
            return
        loop = asyncio.get_running_loop()
        last_time, last_bytes = loop.time(), state.received
        interval = _RAMP_FIRST
        while queue and ramp.opened < len(gates):
            await asyncio.sleep(interval)
            interval = _RAMP_INTERVAL
            now, got = loop.time(), state.received
            per_connection = (got - last_bytes) / max(now - last_time, 1e-3) / ramp.opened
            last_time, last_bytes = now, got
            ramp.alone_and_fast = ramp.opened == 1 and per_connection >= fast
            if per_connection >= fast:
                continue
            more = min(ramp.opened * (_RAMP_FACTOR - 1), len(gates) - ramp.opened)
            for gate in gates[ramp.opened:ramp.opened + more]:
                gate.set()
            ramp.opened += more

    # ------------------------------------------------------------------ parts

    async def _run_part(
        self, transfer: FileTransfer, state: _State, part: _Part, writer: _DiskWriter
    ) -> None:
        failures = 0
        reached = part.done  # received and queued for the writer
        while reached < part.end:
            before = reached
            try:
                reached = await self._stream_part(transfer, state, part, writer)
                if reached < part.end:
                    raise _Retry(
                        IncompleteTransfer(
                            f"the server closed the connection early while sending {transfer.key}"
                        )
                    )
            except _Retry as retry:
                await writer.flush()  # the retry asks for the bytes after part.done: make it exact
                reached = part.done
                failures = 1 if reached > before else failures + 1
                if failures > self.policy.max_retries:
                    raise retry.error from None
                delay = retry.retry_after
                if delay is None:
                    delay = min(
                        self.policy.backoff_max, self.policy.backoff_initial * 2 ** (failures - 1)
                    )
                    delay *= 0.75 + random.random() / 2
                log.info(
                    "retrying %s bytes %d-%d in %.1fs: %s",
                    transfer.key, part.done, part.end - 1, delay, retry.error.message,
                )
                await asyncio.sleep(delay)

    async def _stream_part(
        self, transfer: FileTransfer, state: _State, part: _Part, writer: _DiskWriter
    ) -> int:
        """Fetch the rest of ``part`` into the writer's queue; return the offset reached."""
        headers = {"Range": f"bytes={part.done}-{part.end - 1}", "Accept-Encoding": "identity"}
        url = URL(transfer.url, encoded=True)
        try:
            response = await self._request(url, headers)
        except asyncio.TimeoutError:
            raise _Retry(TransferTimeout(
                f"{_describe(url)} did not answer within {self.policy.stall_timeout:.0f}s"
            )) from None
        except aiohttp.ClientConnectorError as exc:
            raise _Retry(ConnectionFailed(f"cannot connect to {_describe(url)}: {exc.os_error}")) from None
        except aiohttp.ClientError as exc:
            raise _Retry(ConnectionFailed(f"request to {_describe(url)} failed: {exc}")) from None
        async with response:
            self._check_response(transfer, part, response, await self._error_body(response))
            if state.ranges_ok is not None and not state.ranges_ok.done():
                if response.status == 200:
                    _merge_following_parts(state, part)
                state.ranges_ok.set_result(response.status == 206)
            # Chunks as received, written together with one pwritev: no copies in between.
            buffer: list[bytes] = []
            buffered = 0
            since = 0.0  # when the oldest buffered chunk arrived
            clock = asyncio.get_running_loop().time
            offset = part.done  # where ``buffer`` starts in the file
            skip = part.done if response.status == 200 else 0
            self.tracker.begin(transfer.key)
            try:
                async for chunk, _ in response.content.iter_chunks():
                    if skip:
                        dropped = min(skip, len(chunk))
                        skip -= dropped
                        chunk = chunk[dropped:]
                        if not chunk:
                            continue
                    room = part.end - offset - buffered
                    if room <= 0:
                        break
                    if len(chunk) > room:
                        chunk = chunk[:room]
                    if not buffer:
                        since = clock()
                    buffer.append(chunk)
                    buffered += len(chunk)
                    state.received += len(chunk)
                    self.tracker.update(transfer.key, state.received)
                    if (buffered >= _FLUSH_BYTES or len(buffer) >= _MAX_IOVEC
                            or clock() - since >= _FLUSH_INTERVAL):
                        await writer.write(offset, buffer, part)
                        offset += buffered
                        buffer, buffered = [], 0
            except asyncio.TimeoutError:
                raise _Retry(TransferTimeout(
                    f"the download of {transfer.key} stalled (no data for "
                    f"{self.policy.stall_timeout:.0f}s)"
                )) from None
            except aiohttp.ClientError as exc:
                raise _Retry(IncompleteTransfer(
                    f"the connection broke while fetching {transfer.key}: {exc or type(exc).__name__}"
                )) from None
            finally:
                self.tracker.end(transfer.key)
                if buffer:
                    writer.write_nowait(offset, buffer, part)
            return offset + buffered

    async def _error_body(self, response: aiohttp.ClientResponse) -> str:
        if response.status in (200, 206):
            return ""
        try:
            return (await response.content.read(4096)).decode("utf-8", "replace")
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return ""

    def _check_response(
        self, transfer: FileTransfer, part: _Part, response: aiohttp.ClientResponse, body: str
    ) -> None:
        status = response.status
        where = _describe(response.url)
        if status == 206:
            content_range = response.headers.get("Content-Range", "")
            expected = f"bytes {part.done}-"
            if not content_range.startswith(expected):
                raise ServerError(
                    f"{where} answered a ranged request with the wrong range "
                    f"({content_range or 'none'}; asked for {part.done}-{part.end - 1})"
                )
            total = content_range.rpartition("/")[2]
            if total.isdigit() and int(total) != transfer.size:
                raise ServerError(
                    f"{where} has {total} bytes for {transfer.key}, the plan said "
                    f"{transfer.size}; the file changed on the server: run the download again"
                )
            return
        if status == 200:
            # The server ignored Range and sends the whole file: the caller skips
            # what is already on disk, so resuming still works (at a bandwidth cost).
            length = response.content_length
            if length is not None and length != transfer.size:
                raise ServerError(
                    f"{where} sent {length} bytes for {transfer.key}, expected {transfer.size}; "
                    "the file changed on the server: run the download again"
                )
            if part.done > 0 or part.end < transfer.size:
                log.info("%s ignores Range; skipping %d bytes of a full response", where, part.done)
            return
        custom = self.error_for_response(response, body) if self.error_for_response else None
        if status in (429, 503) or status >= 500:
            error = custom or ServerError(
                f"{where} answered HTTP {status}; the server is failing or overloaded, "
                "try again later (the download resumes)"
            )
            raise _Retry(error, _retry_after(response, self.policy.retry_after_max))
        if custom is not None:
            raise custom
        if status in (401, 403):
            raise AuthRequired(
                f"{where} refused access (HTTP {status}); check the token you passed"
            )
        if status == 404:
            raise ModelNotFound(f"{where} does not exist (HTTP 404)")
        if status == 416:
            raise ServerError(f"{where} rejected the byte range for {transfer.key} (HTTP 416)")
        raise ServerError(f"{where} answered HTTP {status}: {body[:200]}")

    async def _request(self, url: URL, headers: dict[str, str]) -> aiohttp.ClientResponse:
        refreshed = False
        for _ in range(_MAX_REDIRECTS + 1):
            response = await self.session.get(
                url, headers={**headers, **self.auth.headers_for(url)}, allow_redirects=False
            )
            if response.status in _REDIRECTS and "Location" in response.headers:
                location = URL(response.headers["Location"], encoded=True)
                response.release()
                url = url.join(location)
                continue
            if response.status == 401 and not refreshed:
                refreshed = True
                if await self.auth.refresh(self.session, response):
                    response.release()
                    continue
            return response
        raise ServerError(f"too many redirects fetching {_describe(url)}")

    # ------------------------------------------------------------------ verify

    async def _verify(self, transfer: FileTransfer, writer: _DiskWriter) -> None:
        self.tracker.verifying = transfer.key
        try:
            await writer.finish()
        except HashCancelled:
            raise asyncio.CancelledError() from None
        finally:
            if self.tracker.verifying == transfer.key:
                self.tracker.verifying = None
        got = writer.hexdigest()
        if got != hex_of(transfer.digest):
            assert transfer.partial is not None
            transfer.partial.unlink(missing_ok=True)
            transfer.state_path.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"{transfer.key} is corrupt: its digest is {got[:16]}…, expected "
                f"{hex_of(transfer.digest)[:16]}…; nothing was kept or published. Run the "
                "download again to fetch it anew"
            )


class _DiskWriter:
    """Writes a file's received chunks in a thread beside the event loop; a :class:`_Hasher` follows.

    The event loop only queues chunks (:meth:`write`); the thread writes them
    with one ``pwritev`` each, then moves the part's ``done`` forward (so part
    state never claims bytes that are not on disk) and hands the chunks to the
    hasher, which works in a third thread: receiving, writing and hashing
    overlap.
    """

    def __init__(self, transfer: FileTransfer, fd: int, state: _State, threaded: bool = True) -> None:
        self._transfer = transfer
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._hash = _Hasher(transfer, fd, state, threaded)
        self._jobs: deque[tuple[int, list[bytes], _Part, int]] = deque()
        self._cv = threading.Condition()
        self._queued = 0
        self._submitted = 0
        self._written = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._space = asyncio.Event()
        self._space.set()
        self._blocked = False
        self._stop = False
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="modelpull-writer", daemon=True)
            self._thread.start()

    # -- the event loop's side ----------------------------------------------
    def write_nowait(self, offset: int, chunks: list[bytes], part: _Part) -> None:
        """Queue ``chunks`` for ``offset``; they are written in order."""
        if self._thread is None:  # a small file: write (and hash) right here
            self._write(offset, chunks, part, 0)
            return
        with self._cv:
            self._submitted += 1
            self._jobs.append((offset, chunks, part, self._submitted))
            self._queued += sum(map(len, chunks))
            if self._queued >= _MAX_QUEUED:
                self._blocked = True
                self._space.clear()
            self._cv.notify()

    async def write(self, offset: int, chunks: list[bytes], part: _Part) -> None:
        """:meth:`write_nowait`, then wait while too much is queued (the disk is slower)."""
        self._raise_error()
        self.write_nowait(offset, chunks, part)
        if not self._space.is_set():
            await self._space.wait()
        self._raise_error()

    async def flush(self) -> None:
        """Wait until everything queued so far is on disk."""
        with self._cv:
            if self._written >= self._submitted or self.error is not None:
                waiter = None
            else:
                waiter = self._loop.create_future()
                self._waiters.append((self._submitted, waiter))
        if waiter is not None:
            await asyncio.shield(waiter)
        self._raise_error()

    async def finish(self) -> None:
        """Write everything, hash what is left (from disk); raise what went wrong."""
        await self.flush()
        if self._thread is None:
            self._hash.finish()
            return
        try:
            await asyncio.to_thread(self._hash.finish)
        except asyncio.CancelledError:
            self._hash.cancel.set()
            raise

    def close(self) -> None:
        """Write what is queued, stop both threads (interrupting any hashing), wait for them."""
        self._hash.stop()
        if self._thread is not None:
            with self._cv:
                self._stop = True
                self._cv.notify()
            self._thread.join()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    # -- the thread ------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not (self._jobs or self._stop):
                        self._cv.wait()
                    if not self._jobs:
                        return
                    job = self._jobs.popleft()
                self._write(*job)
        except BaseException as exc:  # noqa: BLE001 - reported to the event loop
            self.error = self.error or exc
        finally:
            with self._cv:
                waiters, self._waiters = self._waiters, []
            for _, waiter in waiters:
                self._loop.call_soon_threadsafe(_resolve, waiter)
            self._loop.call_soon_threadsafe(self._space.set)

    def _write(self, offset: int, chunks: list[bytes], part: _Part, number: int) -> None:
        total = sum(map(len, chunks))
        if self.error is None:
            try:
                _pwrite_all(self._fd, chunks, offset, total)
            except OSError as exc:
                self.error = _write_error(exc, self._transfer)
            else:
                part.done = offset + total
                self._hash.feed(offset, chunks, total)
        if self._thread is None:
            return
        with self._cv:
            self._queued -= total
            self._written = number
            ready = [w for n, w in self._waiters if n <= number or self.error is not None]
            self._waiters = [(n, w) for n, w in self._waiters if w not in ready]
            unblock = self._blocked and self._queued < _MAX_QUEUED // 2
            if unblock:
                self._blocked = False
        for waiter in ready:
            self._loop.call_soon_threadsafe(_resolve, waiter)
        if unblock:
            self._loop.call_soon_threadsafe(self._space.set)


class _Hasher:
    """Hashes a file in its own thread while it is written.

    Chunks that extend the hashed prefix come straight from the writer, in
    memory; bytes written ahead of the prefix (other parts) are read back from
    the page cache once the prefix reaches them.
    """

    def __init__(self, transfer: FileTransfer, fd: int, state: _State, threaded: bool = True) -> None:
        self._hasher = new_hasher(transfer.digest, transfer.size)
        self._size = transfer.size
        self._fd = fd
        self._state = state
        self._cv = threading.Condition()
        self._queue: deque[tuple[list[bytes], int]] = deque()
        self._queued = 0
        self._frontier = 0  # end of what is hashed or queued to be
        self._final = False
        self.cancel = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="modelpull-hash", daemon=True)
            self._thread.start()

    def feed(self, offset: int, chunks: list[bytes], total: int) -> None:
        """Bytes now on disk at ``offset`` (called by the writer thread)."""
        if self._thread is None:  # hash in place, in order; the rest is read back at the end
            if offset == self._frontier:
                for chunk in chunks:
                    self._hasher.update(chunk)
                self._frontier += total
            return
        with self._cv:
            # In order: wait for room (the writer, then the connections, slow down to
            # the hash's pace) rather than read it all back from disk later.
            while offset == self._frontier and self._queued >= _MAX_HASH_QUEUE and not self.cancel.is_set():
                self._cv.wait(0.5)
            if offset == self._frontier:
                self._queue.append((chunks, total))
                self._queued += total
                self._frontier += total
            self._cv.notify_all()

    def finish(self) -> None:
        """Hash the rest of the file (blocking: run it in a thread); raise what went wrong."""
        if self._thread is None:
            hash_fd_range(self._fd, self._frontier, self._size, self._hasher, self.cancel)
            self._frontier = self._size
            return
        with self._cv:
            self._final = True
            self._cv.notify_all()
        self._thread.join()
        if self.error is not None:
            raise self.error
        if self.cancel.is_set():
            raise HashCancelled()

    def stop(self) -> None:
        self.cancel.set()
        if self._thread is not None:
            with self._cv:
                self._cv.notify_all()
            self._thread.join()

    def hexdigest(self) -> str:
        return str(self._hasher.hexdigest())

    def _run(self) -> None:
        try:
            while not self.cancel.is_set():
                with self._cv:
                    while not (self._queue or self.cancel.is_set() or self._final
                               or _contiguous_end(self._state) > self._frontier):
                        self._cv.wait(0.5)
                    if self.cancel.is_set():
                        return
                    chunks: list[bytes] | None = None
                    if self._queue:
                        chunks, total = self._queue.popleft()
                        self._queued -= total
                        self._cv.notify_all()  # a writer may wait for room
                    else:
                        end = self._size if self._final else _contiguous_end(self._state)
                        if end <= self._frontier:
                            return  # final, and all of it is hashed
                        start, self._frontier = self._frontier, min(end, self._frontier + _CATCH_UP_STEP)
                        stop = self._frontier
                if chunks is not None:
                    for chunk in chunks:
                        self._hasher.update(chunk)
                else:
                    hash_fd_range(self._fd, start, stop, self._hasher, self.cancel)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _pwrite_all(fd: int, chunks: list[bytes], offset: int, total: int) -> None:
    if len(chunks) > 1 and hasattr(os, "pwritev"):
        written = os.pwritev(fd, chunks, offset)
    else:
        written = os.pwrite(fd, chunks[0], offset) if chunks else 0
    if written < total:  # a short write: finish it piece by piece
        view = memoryview(b"".join(chunks))
        while written < total:
            written += os.pwrite(fd, view[written:], offset + written)


def _write_error(exc: OSError, transfer: FileTransfer) -> BaseException:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"the disk filled up while writing {transfer.key}; free some space and run "
            "the download again: it resumes where it stopped"
        )
    return exc


def _contiguous_end(state: _State) -> int:
    """How far the file is complete from byte 0 (parts are contiguous, sorted by start)."""
    end = 0
    for part in sorted(state.parts, key=lambda p: p.start):
        if part.start != end:
            break
        end = part.done
        if not part.finished:
            break
    return end


def _retry_after(response: aiohttp.ClientResponse, cap: float) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, cap))


def new_session(policy: TransferPolicy, **kwargs: Any) -> aiohttp.ClientSession:
    """An HTTP session with the engine's timeouts: connect and read stalls, no total."""
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=policy.connect_timeout, sock_read=policy.stall_timeout
    )
    connector = aiohttp.TCPConnector(limit=64, limit_per_host=32, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        timeout=timeout,
        connector=connector,
        auto_decompress=False,
        trust_env=True,
        read_bufsize=_READ_BUFFER,
        **kwargs,
    )
