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
   make no progress count against ``max_retries``. Whether and when to retry
   is the policy's decision (:meth:`TransferPolicy.retry`), not the engine's.
5. Verify the whole file against its digest, then rename it into place. A
   mismatch discards the partial (``checksum_mismatch``); nothing is published.

Credentials come from an :class:`~modelpull._transfer.auth.Auth` that only
gives them to their own host; redirects are followed by hand (``http.send``),
so an ``Authorization`` header never reaches another host.

Beside this module: ``parts`` keeps the part state, ``writer`` the writer and
hasher threads, ``http`` the sessions and the request loop, ``policy`` every
limit and the retry decision.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from filelock import FileLock, Timeout
from yarl import URL

from .._aio import run_all
from .._durable import replace_durably
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
from .hashing import HashCancelled, check_digest, hex_of
from .http import describe, retry_after, send
from .parts import (
    STATE_SUFFIX,
    Part,
    PartState,
    merge_following_parts,
    present_bytes,
    take_following_parts,
)
from .policy import TransferPolicy
from .writer import DiskWriter

log = logging.getLogger("modelpull.transfer")

#: received bytes are written (and count as resumable) every this many bytes per
#: connection, or after this long, whichever comes first
_FLUSH_BYTES = 1 << 20
_FLUSH_INTERVAL = 0.05
#: pwritev takes at most IOV_MAX (1024 on Linux) buffers
_MAX_IOVEC = 512
#: when the speed of a file's first connection is first judged, then how often again
_RAMP_FIRST = 0.1
_RAMP_INTERVAL = 0.2
#: connections are multiplied by this while each is slow
_RAMP_FACTOR = 4
#: files up to this size are written and hashed on the event loop, without threads
_SMALL_FILE = 1 << 20
#: parts a lone fast connection adds to each of its requests
_ALONE_PARTS = 7


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
    #: whose file this is (``provider``, ``model``), kept in the part state so partial
    #: downloads can be listed by model
    owner: dict[str, str] = field(default_factory=dict)

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
class _Ramp:
    """How many connections a file has open, and whether its only one is fast."""

    opened: int = 1
    alone_and_fast: bool = False


class _Retry(Exception):
    """A part attempt failed; the policy decides whether another one is worth it.

    ``error`` is what we report if not, ``cause`` what actually went wrong (an
    exception, or None for an HTTP status the policy deems retryable).
    """

    def __init__(
        self, error: ModelpullError, retry_after: float | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after
        self.cause = cause


#: Maps an unexpected HTTP response to a typed error (provider-specific wording).
ErrorForResponse = Callable[[aiohttp.ClientResponse, str], ModelpullError | None]


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
        state = PartState.load(transfer.state_path, transfer.digest, transfer.size)
        fresh = state is None or not transfer.partial.exists()
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0)
        fd = os.open(transfer.partial, flags, 0o644)
        try:
            if fresh:
                state = PartState(
                    transfer.digest,
                    transfer.size,
                    [Part(s, e, s) for s, e in self.policy.split(transfer.size)],
                )
                state.owner = {**transfer.owner, "file": transfer.key}
                self._reserve(fd, transfer)
                state.save(transfer.state_path, transfer.key)
            assert state is not None
            state.received = state.present
            self.tracker.update(transfer.key, state.received)
            # A small file is written and hashed right on the event loop: two
            # threads per file would cost more than they save.
            writer = DiskWriter(transfer, fd, state, threaded=transfer.size > _SMALL_FILE)
            try:
                await self._fetch_parts(transfer, state, writer)
                await self._verify(transfer, writer)
            finally:
                writer.close()  # queued bytes land on disk before the descriptor closes
            # Verified: flush the bytes, then give the file its name (then flush the name).
            await asyncio.to_thread(replace_durably, transfer.partial, transfer.dest, fd)
        finally:
            os.close(fd)
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

    async def _fetch_parts(
        self, transfer: FileTransfer, state: PartState, writer: DiskWriter
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
                state.save(transfer.state_path, transfer.key)

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
                    take_following_parts(state, queue, part, _ALONE_PARTS)
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
            state.save(transfer.state_path, transfer.key)

    async def _ramp_up(
        self, state: PartState, queue: deque[Part], gates: list[asyncio.Event], ramp: _Ramp
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
        self, transfer: FileTransfer, state: PartState, part: Part, writer: DiskWriter
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
            except _Retry as failed:
                await writer.flush()  # the retry asks for the bytes after part.done: make it exact
                reached = part.done
                retry = self.policy.retry(
                    failed.cause or failed.error, failures,
                    progressed=reached > before, retry_after=failed.retry_after,
                )
                if retry is None:
                    raise failed.error from None
                failures = retry.failures
                log.info(
                    "retrying %s bytes %d-%d in %.1fs: %s",
                    transfer.key, part.done, part.end - 1, retry.delay, failed.error.message,
                )
                await asyncio.sleep(retry.delay)

    async def _stream_part(
        self, transfer: FileTransfer, state: PartState, part: Part, writer: DiskWriter
    ) -> int:
        """Fetch the rest of ``part`` into the writer's queue; return the offset reached."""
        headers = {"Range": f"bytes={part.done}-{part.end - 1}", "Accept-Encoding": "identity"}
        url = URL(transfer.url, encoded=True)
        try:
            response = await send(self.session, url, headers, self.auth)
        except asyncio.TimeoutError as exc:
            raise _Retry(TransferTimeout(
                f"{describe(url)} did not answer within {self.policy.stall_timeout:.0f}s"
            ), cause=exc) from None
        except aiohttp.ClientConnectorError as exc:
            raise _Retry(
                ConnectionFailed(f"cannot connect to {describe(url)}: {exc.os_error}"), cause=exc
            ) from None
        except aiohttp.ClientError as exc:
            raise _Retry(
                ConnectionFailed(f"request to {describe(url)} failed: {exc}"), cause=exc
            ) from None
        async with response:
            self._check_response(transfer, part, response, await self._error_body(response))
            if state.ranges_ok is not None and not state.ranges_ok.done():
                if response.status == 200:
                    merge_following_parts(state, part)
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
            except asyncio.TimeoutError as exc:
                raise _Retry(TransferTimeout(
                    f"the download of {transfer.key} stalled (no data for "
                    f"{self.policy.stall_timeout:.0f}s)"
                ), cause=exc) from None
            except aiohttp.ClientError as exc:
                raise _Retry(IncompleteTransfer(
                    f"the connection broke while fetching {transfer.key}: {exc or type(exc).__name__}"
                ), cause=exc) from None
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
        self, transfer: FileTransfer, part: Part, response: aiohttp.ClientResponse, body: str
    ) -> None:
        status = response.status
        where = describe(response.url)
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
        if self.policy.retryable_status(status):
            error = custom or ServerError(
                f"{where} answered HTTP {status}; the server is failing or overloaded, "
                "try again later (the download resumes)"
            )
            raise _Retry(error, retry_after(response))
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

    # ------------------------------------------------------------------ verify

    async def _verify(self, transfer: FileTransfer, writer: DiskWriter) -> None:
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
