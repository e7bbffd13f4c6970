"""Ranged, parallel, resumable, verified HTTP downloads.

One file at a time goes like this:

1. Already at its final path with the right size: nothing to do.
2. Take the file's lock (another download of the same file, in this process
   or another, holds it: wait, mirroring its progress from its part state).
3. Another store on this machine has the same bytes (the caller's
   ``copies``): link or copy them next to the final place (``copies``),
   verify the digest, publish. Nothing goes over the network.
4. Load the part state kept beside the partial file, or split the file into
   parts (the policy) and reserve its space (``disk_full`` before any byte).
5. Fetch every unfinished part as its own ``Range`` request; how many at
   once, and who takes over the rest of a part whose connection lags, is the
   ``scheduler``'s business. A part whose connection drops, stalls or gets a
   5xx/429 is retried from the byte where it stopped, with backoff (or the
   server's ``Retry-After``); only attempts that make no progress count
   against ``max_retries``. Whether and when to retry is the policy's decision
   (:meth:`TransferPolicy.retry`), not the engine's. Every chunk is paced by
   the download's bandwidth cap (``limit``) before it counts.
6. Verify the whole file against its digest, then rename it into place. A
   mismatch discards the partial (``checksum_mismatch``); nothing is published.

Credentials come from an :class:`~modelpull._transfer.auth.Auth` that only
gives them to their own host; redirects are followed by hand (``http.send``),
so an ``Authorization`` header never reaches another host.

Beside this module: ``parts`` keeps the part state, ``scheduler`` the
connections of a file, ``writer`` the writer and hasher threads, ``http`` the
sessions and the request loop, ``policy`` every limit and the retry decision,
``limit`` the bandwidth cap, ``links`` what each link did a moment ago,
``copies`` the local copies.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

from filelock import FileLock, Timeout
from yarl import URL

from .._aio import run_all
from .._durable import replace_durably
from .._lazy import lazy
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
from .copies import adopt_copy
from .hashing import HashCancelled, hex_of
from .http import describe, retry_after, send
from .limit import RateLimit
from .links import LINKS, LinkMemory
from .parts import FileTransfer, Part, PartState, merge_following_parts, present_bytes
from .policy import TransferPolicy
from .scheduler import FileSchedule, Stream
from .wire import Fallback, WirePool, WireResponse
from .writer import Chunk, DiskWriter

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")


log = logging.getLogger("modelpull.transfer")

#: received bytes are written (and count as resumable) every this many bytes per
#: connection, or after this long, whichever comes first
_FLUSH_BYTES = 1 << 20
_FLUSH_INTERVAL = 0.05
#: pwritev takes at most IOV_MAX (1024 on Linux) buffers
_MAX_IOVEC = 512
#: files up to this size are written and hashed on the event loop, without threads
_SMALL_FILE = 1 << 20


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


#: Maps an unexpected HTTP response to a typed error (provider-specific wording). The
#: response is aiohttp's or the lean client's (:class:`.wire.WireResponse`): both have
#: ``status``, ``headers``, ``url`` and ``content_length``.
ErrorForResponse = Callable[[Any, str], ModelpullError | None]
#: a response the engine reads a part from
Answer: TypeAlias = "aiohttp.ClientResponse | WireResponse"


class TransferEngine:
    """Fetches :class:`FileTransfer` objects and reports bytes to a tracker."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: TransferPolicy,
        tracker: ProgressTracker,
        auth: Auth | None = None,
        error_for_response: ErrorForResponse | None = None,
        limit: RateLimit | None = None,
        links: LinkMemory = LINKS,
    ) -> None:
        self.session = session
        self.policy = policy
        self.tracker = tracker
        self.auth: Auth = auth or NoAuth()
        self.error_for_response = error_for_response
        #: the bandwidth cap every connection of this engine is paced by (shared or not)
        self.limit = limit if limit is not None else policy.rate_limit()
        self.links = links
        #: key -> how a file came from a local copy ("hardlink", "reflink", "copy")
        self.copied: dict[str, str] = {}
        #: tail splits made (the rest of a lagging part given to another connection)
        self.splits = 0
        self._wire: WirePool | None = None
        self._fetching = 0

    # ------------------------------------------------------------------ files

    async def fetch_all(self, transfers: Iterable[FileTransfer]) -> None:
        """Fetch every transfer, ``max_parallel_files`` at a time; first failure stops all."""
        limit = asyncio.Semaphore(self.policy.max_parallel_files)

        async def one(transfer: FileTransfer) -> None:
            async with limit:
                await self.fetch(transfer)

        self._fetching += 1
        try:
            await run_all(one(t) for t in transfers)
        finally:
            self._fetching -= 1
            if not self._fetching:
                self.close()

    async def fetch(self, transfer: FileTransfer) -> None:
        self._fetching += 1
        try:
            await self._fetch_one(transfer)
        finally:
            self._fetching -= 1
            if not self._fetching:
                self.close()

    async def _fetch_one(self, transfer: FileTransfer) -> None:
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
            if transfer.copies is not None and await self._from_copy(transfer):
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
        reserving: asyncio.Future[None] | None = None
        try:
            if fresh:
                state = PartState(
                    transfer.digest,
                    transfer.size,
                    [Part(s, e, s) for s, e in self.policy.split(transfer.size)],
                )
                state.owner = {**transfer.owner, "file": transfer.key}
                if transfer.size > _SMALL_FILE:
                    # Reserving a large file's space can take a while (tmpfs zeroes every page):
                    # it runs beside the first requests, on a descriptor of its own.
                    reserving = asyncio.ensure_future(asyncio.to_thread(self._reserve, os.dup(fd), transfer, True))
                else:
                    self._reserve(fd, transfer)
                state.save(transfer.state_path, transfer.key)
            assert state is not None
            state.received = state.present
            self.tracker.update(transfer.key, state.received)
            # A small file is written and hashed right on the event loop: two
            # threads per file would cost more than they save.
            writer = DiskWriter(transfer, fd, state, threaded=transfer.size > _SMALL_FILE)
            try:
                if reserving is not None:
                    await run_all([self._fetch_parts(transfer, state, writer), reserving])
                else:
                    await self._fetch_parts(transfer, state, writer)
                await self._verify(transfer, writer)
            finally:
                writer.close()  # queued bytes land on disk before the descriptor closes
            # Verified: flush the bytes, then give the file its name (then flush the name).
            await asyncio.to_thread(replace_durably, transfer.partial, transfer.dest, fd)
        finally:
            os.close(fd)
        transfer.state_path.unlink(missing_ok=True)

    def _reserve(self, fd: int, transfer: FileTransfer, close: bool = False) -> None:
        """Give the partial file its size, its blocks allocated; ``close``: ``fd`` is ours to close."""
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
        finally:
            if close:
                os.close(fd)

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
        link = self.links.report(transfer.url)
        if len(pending) > 1:
            # The first response tells whether the server honours Range; until it
            # does, the other parts wait (a server or cache that ignores Range would
            # send the whole file to every part). Asked per file, never remembered:
            # a pull-through cache takes ranges for the blobs it holds, not for the rest.
            state.ranges_ok = asyncio.get_running_loop().create_future()

        async def fetch_part(part: Part, stream: Stream) -> None:
            await self._run_part(transfer, state, part, writer, stream)

        schedule = FileSchedule(state, self.policy, link, fetch_part, self.limit)
        try:
            await schedule.run()
        finally:
            self.splits += schedule.splits
            stop.set()
            saver.cancel()
            await asyncio.gather(saver, return_exceptions=True)
            state.save(transfer.state_path, transfer.key)

    # ------------------------------------------------------------------ parts

    async def _run_part(
        self, transfer: FileTransfer, state: PartState, part: Part, writer: DiskWriter,
        stream: Stream,
    ) -> None:
        failures = 0
        reached = part.done  # received and queued for the writer
        loop = asyncio.get_running_loop()
        while reached < part.end:
            before = reached
            stream.position = reached
            stream.restart(loop.time())
            try:
                reached = await self._stream_part(transfer, state, part, writer, stream)
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
                stream.pausing = True
                await asyncio.sleep(retry.delay)

    async def _stream_part(
        self, transfer: FileTransfer, state: PartState, part: Part, writer: DiskWriter,
        stream: Stream,
    ) -> int:
        """Fetch the rest of ``part`` into the writer's queue; return the offset reached.

        ``part.end`` may move down while this runs (the scheduler gave the rest of
        the part to another connection): bytes past it are never counted or written.
        """
        headers = {"Range": f"bytes={part.done}-{part.end - 1}", "Accept-Encoding": "identity"}
        url = URL(transfer.url, encoded=True)
        try:
            response = await self._open(url, headers)
        except asyncio.TimeoutError as exc:
            raise _Retry(TransferTimeout(
                f"{describe(url)} did not answer within {self.policy.stall_timeout:.0f}s"
            ), cause=exc) from None
        except (ConnectionFailed, IncompleteTransfer, TransferTimeout) as exc:
            raise _Retry(exc) from None
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
            if response.status == 206 or part.done > 0 or part.end < transfer.size:
                self.links.note_ranges(transfer.url, response.status == 206)
            if state.ranges_ok is not None and not state.ranges_ok.done():
                if response.status == 200:
                    merge_following_parts(state, part)
                state.ranges_ok.set_result(response.status == 206)
            # Chunks as received, written together with one pwritev: no copies in between.
            buffer: list[Chunk] = []
            buffered = 0
            since = 0.0  # when the oldest buffered chunk arrived
            clock = asyncio.get_running_loop().time
            offset = part.done  # where ``buffer`` starts in the file
            skip = part.done if response.status == 200 else 0
            limit = self.limit  # asked for every chunk: a service's cap may be set while this runs
            self.tracker.begin(transfer.key)
            try:
                async for chunk in _body(response):
                    if skip:
                        dropped = min(skip, len(chunk))
                        skip -= dropped
                        chunk = chunk[dropped:]
                        if not chunk:
                            continue
                    if limit is not None and limit.active:
                        await limit.take(len(chunk))
                    room = part.end - offset - buffered  # after the wait: the end may have moved
                    if room <= 0:
                        break
                    if len(chunk) > room:
                        chunk = chunk[:room]
                    now = clock()
                    if not buffer:
                        since = now
                    buffer.append(chunk)
                    buffered += len(chunk)
                    state.received += len(chunk)
                    stream.advance(offset + buffered, now)
                    self.tracker.update(transfer.key, state.received)
                    if (buffered >= _FLUSH_BYTES or len(buffer) >= _MAX_IOVEC
                            or now - since >= _FLUSH_INTERVAL or offset + buffered >= part.end):
                        stream.pausing = True  # waiting for our own disk, not for the server
                        try:
                            await writer.write(offset, buffer, part)
                        finally:
                            stream.pausing = False
                        offset += buffered
                        buffer, buffered = [], 0
                        if offset >= part.end:
                            break
            except asyncio.TimeoutError as exc:
                raise _Retry(TransferTimeout(
                    f"the download of {transfer.key} stalled (no data for "
                    f"{self.policy.stall_timeout:.0f}s)"
                ), cause=exc) from None
            except aiohttp.ClientError as exc:
                raise _Retry(IncompleteTransfer(
                    f"the connection broke while fetching {transfer.key}: {exc or type(exc).__name__}"
                ), cause=exc) from None
            except IncompleteTransfer as exc:
                raise _Retry(IncompleteTransfer(
                    f"{exc.message.rstrip('.')} while fetching {transfer.key}"
                )) from None
            finally:
                self.tracker.end(transfer.key)
                if buffer:
                    writer.write_nowait(offset, buffer, part)
                self._remember_speed(transfer, stream, clock())
            return offset + buffered

    def _remember_speed(self, transfer: FileTransfer, stream: Stream, now: float) -> None:
        """What this connection did, for the next file on the same link."""
        if stream.first_byte is None:
            return
        self.links.note_first_byte(transfer.url, stream.first_byte - stream.sent)
        speed = stream.average(now)
        if speed is not None:
            self.links.note_speed(transfer.url, speed)

    async def _open(self, url: URL, headers: dict[str, str]) -> Answer:
        """The response to a ranged GET: the lean client's when it can, else aiohttp's."""
        if self._wire is None and self.policy.lean_client:
            self._wire = WirePool(self.policy.connect_timeout, self.policy.stall_timeout)
        if self._wire is not None and WirePool.usable(url):
            try:
                return await self._wire.get(url, headers, self.auth)
            except Fallback as exc:
                log.debug("%s: the general client takes over (%s)", describe(url), exc)
        return await send(self.session, url, headers, self.auth)

    def close(self) -> None:
        """Close the connections kept for the next request (the session is the caller's)."""
        if self._wire is not None:
            self._wire.close()
            self._wire = None

    async def _error_body(self, response: Answer) -> str:
        if response.status in (200, 206):
            return ""
        if isinstance(response, WireResponse):
            return await response.read_error()
        try:
            return (await response.content.read(4096)).decode("utf-8", "replace")
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return ""

    def _check_response(self, transfer: FileTransfer, part: Part, response: Answer, body: str) -> None:
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

    # ------------------------------------------------------------------ local copies
    async def _from_copy(self, transfer: FileTransfer) -> bool:
        """Publish another store's copy of these bytes, once verified; False if none will do."""
        assert transfer.partial is not None and transfer.copies is not None
        try:
            candidates = list(transfer.copies())
        except OSError as exc:
            log.info("could not look for local copies of %s: %s", transfer.key, exc)
            return False
        target = transfer.partial.with_name(transfer.partial.name + ".copy")
        for source in dict.fromkeys(candidates):
            if source == transfer.dest:
                continue
            self.tracker.current = transfer.key
            cancel = threading.Event()
            try:
                how = await asyncio.to_thread(
                    adopt_copy, source, target, transfer.dest, transfer.digest, transfer.size, cancel
                )
            except asyncio.CancelledError:
                cancel.set()
                raise
            except (OSError, HashCancelled) as exc:
                log.info("could not use %s for %s: %s", source, transfer.key, exc)
                continue
            if how is None:
                log.warning(
                    "%s claims the bytes of %s but its digest differs; not using it", source, transfer.key
                )
                continue
            log.info("%s: %s of %s instead of a download", transfer.key, how, source)
            self.copied[transfer.key] = how
            self.tracker.update(transfer.key, transfer.size)
            return True
        return False

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


def _body(response: Answer) -> AsyncIterator[Chunk]:
    """A response's body as it arrives."""
    if isinstance(response, WireResponse):
        return response.chunks()
    return _aiohttp_body(response)


async def _aiohttp_body(response: aiohttp.ClientResponse) -> AsyncIterator[Chunk]:
    async for chunk, _ in response.content.iter_chunks():
        yield chunk
