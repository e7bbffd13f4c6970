"""The disk side of a transfer: a writer thread and a hasher thread beside the event loop.

The event loop only receives bytes and queues them; :class:`DiskWriter` writes
them with one ``pwritev`` per batch in its own thread, and :class:`Hasher`
hashes them in a third, so receiving, writing and hashing overlap. Both queues
are bounded: when the disk or the hash is slower than the network, the
connections wait. A small file (``threaded=False``) is written and hashed
right on the event loop instead.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections import deque

from ..errors import DiskFull
from .hashing import HashCancelled, hash_fd_range, new_hasher
from .parts import FileTransfer, Part, PartState

#: received bytes waiting for the writer thread before the connections pause
_MAX_QUEUED = 8 << 20
#: bytes the hasher reads back from disk at a time (between chunks from memory)
_CATCH_UP_STEP = 32 << 20
#: written bytes waiting for the hasher in memory: in-order bytes wait for room, bytes
#: ahead of the prefix are read back from disk later
_MAX_HASH_QUEUE = 8 << 20

#: received bytes as the connections hand them over (aiohttp's chunks, the lean client's blocks)
Chunk = bytes | bytearray | memoryview


class DiskWriter:
    """Writes a file's received chunks in a thread beside the event loop; a :class:`Hasher` follows.

    The event loop only queues chunks (:meth:`write`); the thread writes them
    with one ``pwritev`` each, then moves the part's ``done`` forward (so part
    state never claims bytes that are not on disk) and hands the chunks to the
    hasher, which works in a third thread: receiving, writing and hashing
    overlap.
    """

    def __init__(self, transfer: FileTransfer, fd: int, state: PartState, threaded: bool = True) -> None:
        self._transfer = transfer
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._hash = Hasher(transfer, fd, state, threaded)
        self._jobs: deque[tuple[int, list[Chunk], Part, int]] = deque()
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
    def write_nowait(self, offset: int, chunks: list[Chunk], part: Part) -> None:
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

    async def write(self, offset: int, chunks: list[Chunk], part: Part) -> None:
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

    def _write(self, offset: int, chunks: list[Chunk], part: Part, number: int) -> None:
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


class Hasher:
    """Hashes a file in its own thread while it is written.

    Chunks that extend the hashed prefix come straight from the writer, in
    memory; bytes written ahead of the prefix (other parts) are read back from
    the page cache once the prefix reaches them.
    """

    def __init__(self, transfer: FileTransfer, fd: int, state: PartState, threaded: bool = True) -> None:
        self._hasher = new_hasher(transfer.digest, transfer.size)
        self._size = transfer.size
        self._fd = fd
        self._state = state
        self._cv = threading.Condition()
        self._queue: deque[tuple[list[Chunk], int]] = deque()
        self._queued = 0
        self._frontier = 0  # end of what is hashed or queued to be
        self._writer_waiting = False
        self._final = False
        self.cancel = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="modelpull-hash", daemon=True)
            self._thread.start()

    def feed(self, offset: int, chunks: list[Chunk], total: int) -> None:
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
            if offset == self._frontier and self._queued >= _MAX_HASH_QUEUE:
                # wait until half of it is hashed: one wake-up per 4 MiB, not one per chunk
                self._writer_waiting = True
                while self._queued > _MAX_HASH_QUEUE // 2 and not self.cancel.is_set() and self.error is None:
                    self._cv.wait(0.5)
                self._writer_waiting = False
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
                               or self._state.contiguous_end() > self._frontier):
                        self._cv.wait(0.5)
                    if self.cancel.is_set():
                        return
                    chunks: list[Chunk] | None = None
                    if self._queue:
                        chunks, total = self._queue.popleft()
                        self._queued -= total
                        if self._writer_waiting and self._queued <= _MAX_HASH_QUEUE // 2:
                            self._cv.notify_all()  # the writer waits for room
                    else:
                        end = self._size if self._final else self._state.contiguous_end()
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


def _pwrite_all(fd: int, chunks: list[Chunk], offset: int, total: int) -> None:
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
