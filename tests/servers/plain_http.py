"""A plain HTTP file server that ignores ``Range``, for the ``url`` source's tests.

Many servers in front of model files (application servers, some proxies and
object-store gateways) answer every ``GET`` with ``200`` and the whole file,
whatever ``Range`` asked for; this one does exactly that, and can be told to
misbehave in the other ways a plain link meets:

* ``add(path, data, disposition=..., length=False)``: a file, with a
  ``Content-Disposition`` header, or sent chunked without ``Content-Length``;
* :attr:`head_allowed`: ``HEAD`` answered ``405`` when False (a URL signed for ``GET`` only);
* :attr:`bytes_per_sec`: a throttle per connection;
* :meth:`stall`: the next ``GET`` stops sending for a while after some bytes;
* :meth:`fail`: the next requests (of one method) answer a status (``500``, ``404``, ...);
* :meth:`redirect`: ``302`` to another URL (another host: ``127.0.0.2``);
* :attr:`token`: files only with ``Authorization: Bearer <token>`` (``401`` otherwise).

Every request is logged (:class:`PlainRequest`: whether an ``Authorization``
header came, never its value; bytes of body sent; whether the client went away).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, replace
from urllib.parse import unquote

from aiohttp import web

from . import LOOPBACK, BackgroundAiohttpServer, transport_gone


@dataclass
class PlainRequest:
    method: str
    path: str
    range: str | None
    auth_present: bool
    status: int = 0
    bytes_sent: int = 0
    client_disconnected: bool = False
    done: bool = False


@dataclass
class _Failure:
    status: int
    times: int
    method: str | None


@dataclass
class _File:
    data: bytes
    disposition: str | None
    length: bool


class PlainFileServer(BackgroundAiohttpServer):
    """Files by path on ``host`` (a loopback address), ``200`` and the whole file to every GET."""

    def __init__(self, host: str = LOOPBACK) -> None:
        super().__init__()
        self.host = host
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._redirects: dict[str, str] = {}
        self._failures: list[_Failure] = []
        self._stalls: list[tuple[int, float]] = []  # (after bytes, seconds)
        self._log: list[PlainRequest] = []
        self.head_allowed = True
        self.bytes_per_sec: int | None = None
        self.token: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.ports[0]}"

    # -- setup -----------------------------------------------------------------
    def add(self, path: str, data: bytes, *, disposition: str | None = None, length: bool = True) -> str:
        """Serve ``data`` at ``path`` (starting with ``/``, percent-decoded); returns its URL."""
        with self._lock:
            self._files[path] = _File(bytes(data), disposition, length)
        return self.url + path

    def redirect(self, path: str, target: str) -> str:
        with self._lock:
            self._redirects[path] = target
        return self.url + path

    def fail(self, status: int, times: int = 1, method: str | None = None) -> None:
        with self._lock:
            self._failures.append(_Failure(status, times, method))

    def stall(self, after_bytes: int, seconds: float) -> None:
        with self._lock:
            self._stalls.append((after_bytes, seconds))

    # -- the log -----------------------------------------------------------------
    @property
    def log(self) -> list[PlainRequest]:
        with self._lock:
            return [replace(r) for r in self._log]

    def requests(self, path: str | None = None, method: str | None = None) -> list[PlainRequest]:
        return [r for r in self.log if (path is None or r.path == path)
                and (method is None or r.method == method)]

    def bytes_sent(self, path: str | None = None) -> int:
        return sum(r.bytes_sent for r in self.requests(path))

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- the app -----------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._serve)  # newlines too
        return app

    async def _astart(self) -> None:  # bind the asked-for loopback address (127.0.0.2: "another host")
        self._runner = web.AppRunner(self.build_app(), handler_cancellation=True,
                                     shutdown_timeout=self.shutdown_timeout, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.ports.append(server.sockets[0].getsockname()[1])

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = unquote(request.raw_path.split("?", 1)[0])
        rec = PlainRequest(request.method, path, request.headers.get("Range"),
                           "Authorization" in request.headers)
        with self._lock:
            self._log.append(rec)
            failure = next((f for f in self._failures if f.method in (None, request.method)), None)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
            target = self._redirects.get(path)
            found = self._files.get(path)
        try:
            if failure is not None:
                return self._answer(rec, web.Response(status=failure.status, text=f"HTTP {failure.status}"))
            if target is not None:
                return self._answer(rec, web.Response(status=302, headers={"Location": target}))
            if request.method not in ("GET", "HEAD") or (request.method == "HEAD" and not self.head_allowed):
                return self._answer(rec, web.Response(status=405, headers={"Allow": "GET"}))
            if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
                return self._answer(rec, web.Response(status=401, text="token required"))
            if found is None:
                return self._answer(rec, web.Response(status=404, text="no such file"))
            return await self._send(request, rec, found)
        finally:
            rec.done = True

    def _answer(self, rec: PlainRequest, response: web.Response) -> web.Response:
        rec.status = response.status
        return response

    async def _send(self, request: web.Request, rec: PlainRequest, found: _File) -> web.StreamResponse:
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{len(found.data)}-plain"'}
        if found.disposition is not None:
            headers["Content-Disposition"] = found.disposition
        response = web.StreamResponse(status=200, headers=headers)  # Range or not: the whole file
        if found.length:
            response.content_length = len(found.data)
        else:
            response.enable_chunked_encoding()
        rec.status = 200
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        with self._lock:
            stall = self._stalls.pop(0) if self._stalls else None
        step = 64 * 1024
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for offset in range(0, len(found.data), step):
                if stall is not None and offset >= stall[0]:
                    await asyncio.sleep(stall[1])
                    stall = None
                chunk = found.data[offset:offset + step]
                await response.write(chunk)
                rec.bytes_sent += len(chunk)
                if self.bytes_per_sec:
                    ahead = rec.bytes_sent / self.bytes_per_sec - (loop.time() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if transport_gone(request):
                    rec.client_disconnected = True
                    return response
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            rec.client_disconnected = True
            raise
        return response


__all__ = ["PlainFileServer", "PlainRequest"]
