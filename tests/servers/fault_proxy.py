"""A fault-injecting HTTP/1.1 proxy to put between modelpull and a real test server.

``FaultProxy(upstream)`` listens on a loopback port (``.url``) and forwards
every request to ``upstream`` (olah's Hub front, docker-registry, the Ollama
emulator, ...), one fresh upstream connection per request. Tests steer it
with thread-safe methods; each *rule* matches requests by method and path
(an ``fnmatch`` pattern on the URL path, query excluded) and fires at most
``times`` times (``None``: always). A rule is used up only when its fault
really happens (a cut at byte N does not count on a response shorter than N).

Faults on the way to the client:

* answers instead of the upstream: :meth:`error` (500/503/429..., optional
  ``Retry-After``), :meth:`respond` (a canned answer: a hostile manifest or
  file list), :meth:`redirect` (to another host), :meth:`reset_mid_header`
  (part of a status line and headers, then a TCP reset); :meth:`hang` says
  nothing at all for a while before it forwards;
* on the response body, counted in body bytes from the start of that
  response: :meth:`cut_after` (TCP reset after N bytes), :meth:`truncate`
  (a clean close after N bytes while the headers announced the full length),
  :meth:`stall` (nothing for T seconds at byte N), :meth:`throttle` (bytes per
  second), :meth:`flip` (invert the byte at body offset N).

Chunked upstream bodies are decoded, shaped and re-chunked, so offsets are
always payload offsets. The log (:class:`Exchange`) keeps per request the
method, path, query, ``Range`` header, whether an ``Authorization`` header
was present (never its value), status, body bytes sent and the faults that
fired; :attr:`connections` counts accepted TCP connections (a test that must
see *no* network call asserts it stays 0). A stalled response also records
when the client gave up (closed its connection): that is the client's stall
detection time.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import socket
import struct
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from . import LOOPBACK

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
}
_CHUNK = 64 * 1024
_MAX_HEAD = 64 * 1024
_REASONS = {
    200: "OK", 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
    307: "Temporary Redirect", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}
#: rule kinds that answer in place of the upstream
_ANSWERS = ("error", "respond", "redirect", "reset_header")


@dataclass
class Exchange:
    """One request through the proxy and what became of it."""

    id: int
    connection: int
    method: str
    path: str  # percent-decoded URL path
    query: str
    range: str | None  # the Range header, verbatim
    auth_present: bool  # an Authorization header was sent; its value is never kept
    status: int | None = None
    content_length: int | None = None  # body length announced to the client
    bytes_sent: int = 0  # body bytes handed to the client
    faults: list[str] = field(default_factory=list)  # "cut@N", "stall@N", "error:503", ...
    started: float = 0.0  # time.monotonic()
    finished: float | None = None
    stall_started: float | None = None  # when the proxy began sending nothing
    client_gave_up: float | None = None  # when the client closed its side during a stall

    @property
    def detected_after(self) -> float | None:
        """Seconds from the start of a stall until the client dropped the connection."""
        if self.stall_started is None or self.client_gave_up is None:
            return None
        return self.client_gave_up - self.stall_started


@dataclass
class _Rule:
    id: int
    kind: str
    path: str | None
    method: str | None
    times: int | None
    params: dict[str, Any]
    #: matching requests (or firings, for body rules) to let pass before the rule applies
    skip: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)


class _ClientGone(Exception):
    """The client closed its connection."""


class FaultProxy:
    """See the module docstring. Every public method may be called from any thread."""

    def __init__(self, upstream: str, *, host: str = LOOPBACK) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self._up_host = parts.hostname
        self._up_port = parts.port or 80
        self._up_netloc = parts.netloc
        self.host = host
        self.port = 0
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._rules: list[_Rule] = []
        self._rule_ids = itertools.count(1)
        self._exchange_ids = itertools.count(1)
        self._connection_ids = itertools.count(1)
        self._log: list[Exchange] = []
        self._connections = 0
        self._inflight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.netloc}"

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        self._thread = threading.Thread(target=self._main, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError("the fault proxy did not start") from self._error
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> FaultProxy:  # noqa: PYI034 - final class in practice
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._client, self.host, 0, limit=_MAX_HEAD)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    # ------------------------------------------------------------ rules
    def _add(self, kind: str, path: str | None, method: str | None, times: int | None, skip: int = 0,
             **params: Any) -> int:
        if times is not None and times < 1:
            raise ValueError("times must be >= 1, or None for always")
        with self._lock:
            rule = _Rule(next(self._rule_ids), kind, path, method.upper() if method else None, times, params,
                         skip)
            self._rules.append(rule)
            return rule.id

    def error(self, status: int, *, retry_after: float | str | None = None, path: str | None = None,
              method: str | None = None, times: int | None = 1, skip: int = 0, body: bytes = b"") -> int:
        """Answer ``status`` instead of the upstream (with ``Retry-After`` if given),
        after letting ``skip`` matching requests through."""
        return self._add("error", path, method, times, skip, status=status, retry_after=retry_after, body=body)

    def respond(self, path: str, *, status: int = 200, body: bytes = b"", content_type: str = "application/json",
                headers: dict[str, str] | None = None, method: str | None = None, times: int | None = None) -> int:
        """Answer requests for ``path`` with this canned response (a hostile source)."""
        return self._add("respond", path, method, times, status=status, body=body,
                         headers={"Content-Type": content_type, **(headers or {})})

    def redirect(self, target_base: str, *, path: str | None = None, status: int = 302,
                 method: str | None = None, times: int | None = None) -> int:
        """Redirect to ``target_base`` + the request's path and query (another host, say)."""
        return self._add("redirect", path, method, times, status=status, base=target_base.rstrip("/"))

    def reset_mid_header(self, *, after: int = 20, path: str | None = None, method: str | None = None,
                         times: int | None = 1) -> int:
        """Send the first ``after`` bytes of a response head, then reset the connection."""
        return self._add("reset_header", path, method, times, after=after)

    def hang(self, seconds: float, *, path: str | None = None, method: str | None = None,
             times: int | None = 1) -> int:
        """Answer nothing at all (not even a status line) for ``seconds``, then forward."""
        return self._add("hang", path, method, times, seconds=float(seconds))

    def cut_after(self, nbytes: int, *, path: str | None = None, method: str | None = None,
                  times: int | None = 1) -> int:
        """Reset the connection once ``nbytes`` body bytes of a response are out."""
        return self._add("cut", path, method, times, at=int(nbytes))

    def truncate(self, nbytes: int, *, path: str | None = None, method: str | None = None,
                 times: int | None = 1) -> int:
        """Close cleanly after ``nbytes`` body bytes, though the headers announced more."""
        return self._add("truncate", path, method, times, at=int(nbytes))

    def stall(self, seconds: float, *, after_bytes: int = 0, path: str | None = None,
              method: str | None = None, times: int | None = 1) -> int:
        """Send nothing for ``seconds`` once ``after_bytes`` body bytes are out."""
        return self._add("stall", path, method, times, at=int(after_bytes), seconds=float(seconds))

    def throttle(self, bytes_per_sec: float, *, path: str | None = None, method: str | None = None,
                 times: int | None = None) -> int:
        """At most ``bytes_per_sec`` body bytes a second, per response."""
        if bytes_per_sec <= 0:
            raise ValueError("bytes_per_sec must be > 0")
        return self._add("throttle", path, method, times, rate=float(bytes_per_sec))

    def flip(self, at: int = 0, *, path: str | None = None, method: str | None = None,
             times: int | None = 1) -> int:
        """Invert the body byte at offset ``at`` (of each matching response)."""
        return self._add("flip", path, method, times, at=int(at))

    def remove(self, rule_id: int) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r.id != rule_id]

    def clear(self) -> None:
        """Remove every rule (the log stays)."""
        with self._lock:
            self._rules.clear()

    def _matching(self, method: str, path: str) -> list[_Rule]:
        with self._lock:
            return [r for r in self._rules if r.matches(method, path) and (r.times is None or r.times > 0)]

    def _consume(self, rule: _Rule) -> bool:
        with self._lock:
            if rule not in self._rules:
                return False
            if rule.skip > 0:
                rule.skip -= 1
                return False
            if rule.times is not None:
                if rule.times <= 0:
                    return False
                rule.times -= 1
                if rule.times == 0:
                    self._rules.remove(rule)
            return True

    # ------------------------------------------------------------ the log
    @property
    def log(self) -> list[Exchange]:
        with self._lock:
            return [replace(e, faults=list(e.faults)) for e in self._log]

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        with self._lock:
            return self._connections

    def requests(self, path: str | None = None, method: str | None = None) -> list[Exchange]:
        """Logged exchanges whose path matches the ``fnmatch`` pattern ``path``."""
        return [
            e for e in self.log
            if (path is None or fnmatch.fnmatchcase(e.path, path)) and (method is None or e.method == method)
        ]

    def body_bytes(self, path: str | None = None) -> int:
        """Body bytes sent to clients for paths matching ``path`` (all when None)."""
        return sum(e.bytes_sent for e in self.requests(path))

    @property
    def bytes_by_path(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for e in self.log:
            totals[e.path] = totals.get(e.path, 0) + e.bytes_sent
        return totals

    def ranges(self, path: str | None = None) -> list[str | None]:
        return [e.range for e in self.requests(path)]

    def faults_fired(self, kind: str | None = None) -> list[str]:
        fired = [f for e in self.log for f in e.faults]
        return [f for f in fired if kind is None or f.split("@")[0].split(":")[0] == kind]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._connections = 0

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is in flight (the log is then final)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._inflight, timeout)

    def text(self) -> str:
        """The whole log as text (URLs and flags), for leak scans."""
        return "\n".join(
            f"{e.method} {e.path}?{e.query} range={e.range} auth={e.auth_present} status={e.status} "
            f"sent={e.bytes_sent} faults={','.join(e.faults)}"
            for e in self.log
        )

    # ------------------------------------------------------------ serving
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        with self._lock:
            self._connections += 1
        conn = next(self._connection_ids)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request = _parse_head(head)
                if request is None:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                method, target, version, headers = request
                body = await _read_request_body(reader, headers)
                if body is None:
                    return
                keep = await self._exchange(conn, method, target, headers, body, reader, writer)
                if not keep or version == "HTTP/1.0" or _header(headers, "connection").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, _ClientGone):
            return
        except asyncio.CancelledError:  # the proxy is stopping
            return
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            if not writer.is_closing():
                try:
                    writer.close()
                except (ConnectionError, RuntimeError):
                    pass

    async def _exchange(
        self,
        conn: int,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Serve one request; False when the client connection must close."""
        split = urlsplit(target)
        path = unquote(split.path)
        ex = Exchange(
            next(self._exchange_ids), conn, method, path, split.query,
            _header(headers, "range") or None,
            any(k.lower() == "authorization" for k, _ in headers),
            started=time.monotonic(),
        )
        with self._lock:
            self._log.append(ex)
            self._inflight += 1
        try:
            rules = self._matching(method, path)
            for rule in rules:
                if rule.kind == "hang" and self._consume(rule):
                    ex.faults.append("hang")
                    await _Shaper(self, ex, [], reader, writer, False).stall(rule.params["seconds"])
            for rule in rules:
                if rule.kind in _ANSWERS and self._consume(rule):
                    return await self._answer(rule, ex, target, writer)
            return await self._forward(ex, method, target, headers, body, rules, reader, writer)
        finally:
            with self._idle:
                ex.finished = time.monotonic()
                self._inflight -= 1
                self._idle.notify_all()

    async def _answer(self, rule: _Rule, ex: Exchange, target: str, writer: asyncio.StreamWriter) -> bool:
        p = rule.params
        if rule.kind == "reset_header":
            ex.faults.append("reset_header")
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n"
            writer.write(head[: p["after"]])
            await writer.drain()
            _reset(writer)
            raise _ClientGone()
        extra: dict[str, str] = {}
        if rule.kind == "error":
            status, payload = p["status"], p["body"]
            if p["retry_after"] is not None:
                extra["Retry-After"] = str(p["retry_after"])
            ex.faults.append(f"error:{status}")
        elif rule.kind == "redirect":
            status, payload = p["status"], b""
            extra["Location"] = p["base"] + target
            ex.faults.append(f"redirect:{status}")
        else:
            status, payload = p["status"], p["body"]
            extra.update(p["headers"])
            ex.faults.append("respond")
        ex.status, ex.content_length = status, len(payload)
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Length: {len(payload)}"]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if ex.method != "HEAD":
            writer.write(payload)
            ex.bytes_sent = len(payload)
        await writer.drain()
        return True

    async def _forward(
        self,
        ex: Exchange,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        rules: list[_Rule],
        client_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        try:
            up_reader, up_writer = await asyncio.open_connection(self._up_host, self._up_port, limit=_MAX_HEAD)
        except OSError:
            ex.status = 502
            ex.faults.append("upstream_down")
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return True
        try:
            out = [f"{method} {target} HTTP/1.1", f"Host: {self._up_netloc}", "Connection: close"]
            out += [f"{k}: {v}" for k, v in headers
                    if k.lower() not in _HOP_BY_HOP and k.lower() not in ("host", "content-length")]
            if body or method in ("POST", "PUT", "PATCH"):
                out.append(f"Content-Length: {len(body)}")
            up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
            await up_writer.drain()
            try:
                head = await up_reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                ex.status = 502
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return True
            status_line, *raw_headers = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            resp_headers = _split_headers(raw_headers)
            ex.status = status
            chunked = "chunked" in _header(resp_headers, "transfer-encoding").lower()
            length_text = _header(resp_headers, "content-length")
            length = int(length_text) if length_text.isdigit() else None
            no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
            until_close = not no_body and not chunked and length is None
            ex.content_length = 0 if no_body else length
            lines = [status_line]
            lines += [f"{k}: {v}" for k, v in resp_headers if k.lower() not in _HOP_BY_HOP]
            if chunked:
                lines.append("Transfer-Encoding: chunked")
            if until_close:
                lines.append("Connection: close")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            if no_body:
                return True
            body_rules = [r for r in rules if r.kind not in _ANSWERS and r.kind != "hang"]
            shaper = _Shaper(self, ex, body_rules, client_reader, writer, chunked)
            pieces = _chunked_body(up_reader) if chunked else _plain_body(up_reader, length)
            try:
                finished = await shaper.pump(pieces)
            except (EOFError, ConnectionError):  # the upstream itself broke off
                ex.faults.append("upstream_broke")
                _reset(writer)
                return False
            if not finished:
                return False
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            return not until_close
        finally:
            up_writer.close()


class _Shaper:
    """Sends one response body to the client, applying the body rules."""

    def __init__(self, proxy: FaultProxy, ex: Exchange, rules: list[_Rule], client_reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, chunked: bool) -> None:
        self.proxy, self.ex, self.rules = proxy, ex, rules
        self.client_reader, self.writer, self.chunked = client_reader, writer, chunked
        self.sent = 0
        self.started = time.monotonic()
        self.rate: float | None = None
        for rule in rules:
            if rule.kind == "throttle" and proxy._consume(rule):
                self.rate = rule.params["rate"] if self.rate is None else min(self.rate, rule.params["rate"])
                ex.faults.append(f"throttle:{int(rule.params['rate'])}")

    async def pump(self, pieces: Any) -> bool:
        """Forward every piece; False when a fault ended the connection."""
        async for piece in pieces:
            while piece:
                stop = self._next_stop(len(piece))
                take = piece[: stop - self.sent] if stop is not None else piece
                piece = piece[len(take):]
                if take:
                    await self._send(self._flipped(take))
                if stop is not None and self.sent == stop and not await self._event_at_offset():
                    return False
        return True

    def _next_stop(self, length: int) -> int | None:
        """The first offset in [sent, sent + length) where a cut, truncate or stall rule is due."""
        offsets = [
            r.params["at"] for r in self.rules
            if r.kind in ("cut", "truncate", "stall") and self.sent <= r.params["at"] < self.sent + length
        ]
        return min(offsets) if offsets else None

    async def _event_at_offset(self) -> bool:
        for rule in list(self.rules):
            if rule.kind not in ("cut", "truncate", "stall") or rule.params["at"] != self.sent:
                continue
            self.rules.remove(rule)  # at most once per response
            if not self.proxy._consume(rule):
                continue
            if rule.kind == "stall":
                self.ex.faults.append(f"stall@{self.sent}")
                await self.stall(rule.params["seconds"])
                continue
            self.ex.faults.append(f"{rule.kind}@{self.sent}")
            await self.writer.drain()
            if rule.kind == "cut":
                _reset(self.writer)
            else:
                self.writer.close()
            return False
        return True

    async def stall(self, seconds: float) -> None:
        """Send nothing for ``seconds``; note when the client gives up meanwhile."""
        self.ex.stall_started = time.monotonic()
        try:
            # A client waiting for the rest of a response sends nothing: any read
            # that returns means it closed (or reset) its side.
            await asyncio.wait_for(self.client_reader.read(1), seconds)
        except asyncio.TimeoutError:
            self.started += seconds  # the throttle does not catch up on the stall
            return
        except ConnectionError:
            pass
        self.ex.client_gave_up = time.monotonic()
        raise _ClientGone()

    def _flipped(self, data: bytes) -> bytes:
        for rule in self.rules:
            if rule.kind != "flip":
                continue
            at = rule.params["at"]
            if self.sent <= at < self.sent + len(data) and self.proxy._consume(rule):
                i = at - self.sent
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                self.ex.faults.append(f"flip@{at}")
        return data

    async def _send(self, data: bytes) -> None:
        if self.rate:
            view = memoryview(data)
            step = max(1024, int(self.rate / 20))
            for i in range(0, len(view), step):
                await self._write(bytes(view[i:i + step]))
                ahead = self.sent / self.rate - (time.monotonic() - self.started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            return
        await self._write(data)

    async def _write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise _ClientGone()
        if self.chunked:
            self.writer.write(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            self.writer.write(data)
        try:
            await self.writer.drain()
        except ConnectionError:
            raise _ClientGone() from None
        self.sent += len(data)
        with self.proxy._lock:
            self.ex.bytes_sent += len(data)


# ------------------------------------------------------------ HTTP plumbing
def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]] | None:
    try:
        line, *rest = head.decode("latin-1").split("\r\n")
        method, target, version = line.split(" ", 2)
    except ValueError:
        return None
    return method.upper(), target, version.strip(), _split_headers(rest)


def _split_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        if ":" in line:
            key, _, value = line.partition(":")
            headers.append((key.strip(), value.strip()))
    return headers


def _header(headers: list[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value
    return ""


async def _read_request_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes | None:
    try:
        if "chunked" in _header(headers, "transfer-encoding").lower():
            return b"".join([piece async for piece in _chunked_body(reader)])
        length = _header(headers, "content-length")
        return await reader.readexactly(int(length)) if length.isdigit() else b""
    except (EOFError, ConnectionError, ValueError):
        return None


async def _plain_body(reader: asyncio.StreamReader, length: int | None) -> Any:
    left = length
    while left is None or left > 0:
        data = await reader.read(_CHUNK if left is None else min(_CHUNK, left))
        if not data:
            if left is not None:
                raise EOFError("the upstream closed before the announced length")
            return
        if left is not None:
            left -= len(data)
        yield data


async def _chunked_body(reader: asyncio.StreamReader) -> Any:
    while True:
        size_line = await reader.readline()
        if not size_line:
            raise EOFError("the upstream closed inside a chunked body")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), like a proxy or NAT dropping the flow."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


__all__ = ["Exchange", "FaultProxy"]
