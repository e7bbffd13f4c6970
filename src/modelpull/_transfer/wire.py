"""A lean HTTP/1.1 GET for the bytes of a file: the socket reads straight into large buffers.

aiohttp hands a body over in chunks it cut and copied itself (the socket's
256 KiB reads, then the parser's slices): for a 1 GiB file that is two copies
in user space and a parser call per read, all on the event loop, which is also
what receives. This client asks the kernel to copy a response body straight
into 1 MiB blocks (:class:`asyncio.BufferedProtocol`); the engine writes those
blocks with ``pwritev`` and hashes them from memory, so every byte is copied
once into this process and once to the page cache - what ``curl -o`` does.

It does one thing: ``GET`` with ``Range`` over http or https (the default TLS
context, SNI), following redirects itself so the :class:`Auth` decides the
headers of every hop, keeping connections alive between requests. Anything
else goes to the general client (:func:`.http.send`, aiohttp) instead:
:class:`Fallback` says so before a request is sent (a proxy is configured for
the URL) or after its answer (a ``401`` to answer through the auth's refresh,
a ``2xx`` body without a ``Content-Length``).

The engine checks the answer as it checks aiohttp's: :class:`WireResponse` has
the same ``status``, ``headers``, ``url`` and ``content_length``.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections import deque
from collections.abc import AsyncIterator

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ..errors import ConnectionFailed, IncompleteTransfer, TransferTimeout
from .auth import Auth
from .http import REDIRECTS, describe

__all__ = ["Fallback", "WirePool", "WireResponse"]

#: bytes of one receive buffer
BLOCK = 1 << 20
#: received bytes the engine has not taken yet before the socket stops being read; over
#: every connection of a pool, past _POOL_UNREAD, a connection holding _MIN_UNREAD stops
_MAX_UNREAD = 2 << 20
_POOL_UNREAD = 8 << 20
_MIN_UNREAD = 256 << 10
#: the most a status line and headers may take
_MAX_HEAD = 64 << 10
#: an error body is read up to this much (it goes into a message)
_ERROR_BODY = 4096
_MAX_REDIRECTS = 10
#: idle connections kept per origin
_KEEP = 32
#: receive buffers kept for reuse (per pool): enough for the queues of a fast file
_MAX_RETIRED = 24


class Fallback(Exception):
    """This request needs the general HTTP client (proxy, ``401`` challenge, body without length)."""


class _Blocks:
    """Receive buffers, used again once nobody holds a view of them any more.

    A connection fills one block at a time; a block it is done with is
    retired here. Its bytes live on in the memoryviews the writer and the
    hasher hold, so a retired block is handed out again only once it has no
    view left (a ``bytearray`` refuses to change size while one exists): no
    byte is overwritten before it is written and hashed. Reusing blocks spares
    the kernel handing out (and zeroing) fresh pages for every megabyte.
    """

    def __init__(self) -> None:
        self._retired: deque[bytearray] = deque()
        #: bytes received on every connection and not taken by the engine yet
        self.unread = 0

    def get(self) -> bytearray:
        for _ in range(len(self._retired)):
            block = self._retired.popleft()
            if _unviewed(block):
                return block
            self._retired.append(block)
        return bytearray(BLOCK)

    def retire(self, block: bytearray) -> None:
        if len(block) == BLOCK and len(self._retired) < _MAX_RETIRED:
            self._retired.append(block)


def _unviewed(block: bytearray) -> bool:
    """Does no memoryview of ``block`` exist any more?"""
    try:
        block.append(0)
    except BufferError:
        return False
    del block[-1]
    return True


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection: a status line and headers, then a body of known length."""

    def __init__(self, blocks: _Blocks) -> None:
        self._blocks = blocks
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: BaseException | None = None
        self._head = bytearray(_MAX_HEAD)
        self._head_len = 0
        self._reading_head = False
        self._head_done: asyncio.Future[tuple[bytes, bytes]] | None = None
        # the body: blocks being filled, and what was received but not yet taken
        self._block = bytearray()
        self._filled = 0
        self._taken = 0
        self._remaining = 0
        self._unread: deque[memoryview] = deque()
        self._unread_bytes = 0
        self._paused = False
        self._wake: asyncio.Future[None] | None = None

    # -- asyncio's side ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._reading_head:
            return memoryview(self._head)[self._head_len:]
        if self._remaining <= 0:  # bytes nobody asked for: buffer_updated drops the connection
            return memoryview(self._head)
        if self._filled == len(self._block):
            self._blocks.retire(self._block)
            self._block = self._blocks.get()
            self._filled = self._taken = 0
        end = min(len(self._block), self._filled + self._remaining)
        return memoryview(self._block)[self._filled:end]

    def buffer_updated(self, nbytes: int) -> None:
        if self._reading_head:
            self._head_len += nbytes
            end = self._head.find(b"\r\n\r\n", 0, self._head_len)
            if end >= 0:
                self._reading_head = False
                head, rest = bytes(self._head[:end]), bytes(self._head[end + 4:self._head_len])
                self._head_len = 0
                # nothing more is read until the caller says how long the body is (expect_body)
                if self.transport is not None and not self._paused:
                    self._paused = True
                    self.transport.pause_reading()
                if self._head_done is not None and not self._head_done.done():
                    self._head_done.set_result((head, rest))
            elif self._head_len >= _MAX_HEAD:
                self._fail(ConnectionError("response headers larger than 64 KiB"))
            return
        if self._remaining <= 0:  # bytes nobody asked for: the connection is no good any more
            self._fail(ConnectionError("the server sent more than the response's length"))
            return
        self._filled += nbytes
        self._remaining -= nbytes
        self._publish()

    def eof_received(self) -> bool | None:
        self._fail(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc)

    # -- ours ----------------------------------------------------------------
    def _fail(self, exc: BaseException | None) -> None:
        self.closed = True
        if self.error is None:
            self.error = exc
        if self._head_done is not None and not self._head_done.done():
            self._head_done.set_exception(exc or ConnectionError("the server closed the connection"))
        self._notify()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _publish(self) -> None:
        if self._filled > self._taken:
            self._unread.append(memoryview(self._block)[self._taken:self._filled])
            self._unread_bytes += self._filled - self._taken
            self._blocks.unread += self._filled - self._taken
            self._taken = self._filled
        crowded = self._blocks.unread >= _POOL_UNREAD and self._unread_bytes >= _MIN_UNREAD
        if (self._unread_bytes >= _MAX_UNREAD or crowded) and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def send(self, request: bytes) -> asyncio.Future[tuple[bytes, bytes]]:
        assert self.transport is not None
        self._reading_head = True
        self._head_len = 0
        self._head_done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._head_done

    def expect_body(self, length: int, first: bytes) -> None:
        self._remaining = length
        self._blocks.retire(self._block)
        self._block = self._blocks.get() if len(first) <= BLOCK else bytearray(len(first))
        self._filled = self._taken = 0
        if first:
            take = first[:length]
            self._block[:len(take)] = take
            self._filled = len(take)
            self._remaining -= len(take)
            if len(first) > length:
                self._fail(ConnectionError("the server sent more than the response's length"))
            self._publish()
        if self._paused and self._unread_bytes < _MAX_UNREAD and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    @property
    def body_done(self) -> bool:
        return self._remaining <= 0 and not self._unread

    async def take(self, timeout: float) -> list[memoryview]:
        """Every body byte received and not taken yet; waits up to ``timeout`` for one."""
        while not self._unread:
            if self._remaining <= 0:
                return []
            if self.closed:
                raise self.error or ConnectionError("the server closed the connection")
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._wake, timeout)
            finally:
                self._wake = None
        views = list(self._unread)
        self._unread.clear()
        self._blocks.unread -= self._unread_bytes
        self._unread_bytes = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return views

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self._unread.clear()
        self._blocks.unread -= self._unread_bytes
        self._unread_bytes = 0
        self._blocks.retire(self._block)
        self._block = bytearray()
        self._filled = self._taken = 0


class WireResponse:
    """A response of :class:`WirePool`: ``status``, ``headers``, ``url``, and the body as blocks."""

    def __init__(self, pool: WirePool, key: tuple[str, str, int], connection: _Connection, status: int,
                 headers: CIMultiDictProxy[str], url: URL, first: bytes, timeout: float) -> None:
        self._pool, self._key, self._connection = pool, key, connection
        self.status = status
        self.headers = headers
        self.url = url
        self._timeout = timeout
        length = headers.get("Content-Length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self._reusable = headers.get("Connection", "").lower() != "close"
        connection.expect_body(self.content_length or 0, first)

    async def chunks(self) -> AsyncIterator[memoryview]:
        """The body as it arrives, each piece once; raises when the connection breaks or stalls."""
        connection = self._connection
        while True:
            try:
                views = await connection.take(self._timeout)
            except asyncio.TimeoutError:
                raise
            except ConnectionError as exc:
                raise IncompleteTransfer(f"the connection broke: {exc}") from None
            except OSError as exc:
                raise IncompleteTransfer(f"the connection broke: {exc.strerror or exc}") from None
            if not views:
                return
            for view in views:
                yield view

    async def drain(self) -> None:
        """Read a short body to its end (a redirect's), so the connection can serve the next request."""
        if self.content_length is None or self.content_length > _ERROR_BODY:
            self._reusable = False
            return
        try:
            async for _ in self.chunks():
                pass
        except (asyncio.TimeoutError, IncompleteTransfer):
            self._reusable = False

    async def read_error(self) -> str:
        """Up to 4 KiB of the body (an error's text); the connection is not kept."""
        got = bytearray()
        try:
            async for view in self.chunks():
                got += view[:_ERROR_BODY - len(got)]
                if len(got) >= _ERROR_BODY:
                    break
        except (asyncio.TimeoutError, IncompleteTransfer):
            pass
        self._reusable = False
        return got.decode("utf-8", "replace")

    def release(self) -> None:
        """Done with it: the connection goes back to the pool if the body was read whole."""
        connection = self._connection
        if self._reusable and connection.body_done and not connection.closed:
            self._pool._give_back(self._key, connection)
        else:
            connection.close()

    async def __aenter__(self) -> WireResponse:  # noqa: PYI034 - not subclassed
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class WirePool:
    """Keep-alive connections per origin, and the request loop (see the module docstring)."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._blocks = _Blocks()
        self.closed = False

    @staticmethod
    def usable(url: URL) -> bool:
        """Can this URL be fetched here (http/https, no proxy configured for it)?"""
        if url.scheme not in ("http", "https") or not url.host:
            return False
        proxies = urllib.request.getproxies_environment()
        if not (url.scheme in proxies or "all" in proxies):
            return True
        return bool(urllib.request.proxy_bypass(url.host))

    async def get(self, url: URL, headers: dict[str, str], auth: Auth) -> WireResponse:
        """``GET url`` following redirects; the final answer, body unread. Raises :class:`Fallback`."""
        for _ in range(_MAX_REDIRECTS + 1):
            if not self.usable(url):
                raise Fallback(f"{describe(url)} goes through a proxy")
            response = await self._request(url, {**headers, **auth.headers_for(url)})
            if response.status in REDIRECTS and "Location" in response.headers:
                location = URL(response.headers["Location"], encoded=True)
                await response.drain()
                response.release()
                url = url.join(location)
                continue
            if response.status == 401 or (200 <= response.status < 300 and response.content_length is None):
                response._reusable = False
                response.release()
                raise Fallback(f"{describe(url)} answered {response.status} in a way only the general client handles")
            return response
        raise Fallback("too many redirects")

    async def _request(self, url: URL, headers: dict[str, str]) -> WireResponse:
        key = (url.scheme, url.host or "", url.explicit_port or url.port or (443 if url.scheme == "https" else 80))
        target = url.raw_path_qs or "/"
        host = url.raw_host or ""
        if url.explicit_port is not None:
            host = f"{host}:{url.explicit_port}"
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}", f"User-Agent: {_user_agent()}", "Accept: */*"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        for attempt in range(2):
            connection, reused = self._idle_connection(key), True
            if connection is None:
                connection, reused = await self._connect(url, key), False
            try:
                head, first = await asyncio.wait_for(connection.send(request), self.read_timeout)
            except (ConnectionError, OSError) as exc:
                connection.close()
                if reused and attempt == 0:
                    continue  # the server closed a kept connection meanwhile: once more, on a fresh one
                raise IncompleteTransfer(f"the connection to {describe(url)} broke: {exc}") from None
            except BaseException:
                connection.close()
                raise
            status, parsed = _parse_head(head, url)
            return WireResponse(self, key, connection, status, parsed, url, first, self.read_timeout)
        raise AssertionError("unreachable")

    def _idle_connection(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.transport is not None and not connection.transport.is_closing():
                return connection
        return None

    async def _connect(self, url: URL, key: tuple[str, str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if url.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self._blocks), key[1], key[2], ssl=context,
                                       server_hostname=key[1] if context else None),
                self.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise TransferTimeout(f"{describe(url)} did not answer within {self.connect_timeout:.0f}s") from None
        except ssl.SSLError as exc:
            # the general client says it the way the policy knows (not retried: a certificate does not heal)
            raise Fallback(f"TLS with {describe(url)} failed: {exc}") from None
        except OSError as exc:
            raise ConnectionFailed(f"cannot connect to {describe(url)}: {exc.strerror or exc}") from None
        return protocol

    def _give_back(self, key: tuple[str, str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if self.closed or len(idle) >= _KEEP:
            connection.close()
        else:
            idle.append(connection)

    def close(self) -> None:
        self.closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def _parse_head(head: bytes, url: URL) -> tuple[int, CIMultiDictProxy[str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise IncompleteTransfer(f"{describe(url)} sent something that is not HTTP/1.1: {lines[0][:80]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise IncompleteTransfer(f"{describe(url)} sent a malformed header line")
        headers.add(name, value.strip())
    if parts[0] == "HTTP/1.0" and headers.get("Connection", "").lower() != "keep-alive":
        headers["Connection"] = "close"
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        headers.popall("Content-Length", None)  # a body in chunks: the length is not the body's
    return int(parts[1]), CIMultiDictProxy(headers)


def _user_agent() -> str:
    """The User-Agent aiohttp sends, so servers see one client whichever path a request takes."""
    from aiohttp.http import SERVER_SOFTWARE  # imported here: the lean path starts without aiohttp

    return SERVER_SOFTWARE
