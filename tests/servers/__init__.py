"""Real local servers used by modelpull's test suite.

Nothing here talks to the internet. Three servers:

* :mod:`tests.servers.olah` - runs the real ``olah`` Hugging Face mirror
  (in its own virtual environment) over git repositories we create.
* :mod:`tests.servers.hf_front` - an aiohttp reverse proxy in front of olah that
  fills the gaps between olah and the real Hub and can be told to misbehave
  (gated repos, errors, throttling, cut connections, stalls).
* :mod:`tests.servers.ollama_emulator` - an Ollama ``/api/pull`` emulator that
  follows docs PROTOCOLS.md section 1.

This module holds the shared plumbing: an aiohttp application run on its own
event loop in a background thread, controlled from the (synchronous or
asynchronous) test through plain thread-safe methods.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Only for programs that must be told their port up front (olah). Our own
    aiohttp servers bind port 0 and read back the real port instead.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class BackgroundAiohttpServer:
    """Runs one aiohttp application on one or more loopback ports in a thread.

    Subclasses implement :meth:`build_app` (called on the server's loop) and
    may pass ``n_sites`` to listen on several ports with the same application
    (``self.ports[i]``; a handler can tell them apart by ``request.url.port``
    or by the ``Host`` header).
    """

    #: seconds a graceful shutdown may wait for in-flight handlers
    shutdown_timeout: float = 1.0

    def __init__(self, n_sites: int = 1) -> None:
        self._n_sites = n_sites
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._start_error: BaseException | None = None
        self.ports: list[int] = []

    # -- to override -----------------------------------------------------
    def build_app(self) -> web.Application:  # pragma: no cover - abstract
        raise NotImplementedError

    async def on_shutdown(self) -> None:
        """Hook run on the server loop before the runner is cleaned up."""

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = 10.0) -> BackgroundAiohttpServer:
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(
            target=self._thread_main, name=f"{type(self).__name__}-loop", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{type(self).__name__} did not start within {timeout}s")
        if self._start_error is not None:
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._start_error
        return self

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._astart())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._astop())
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._stopped.set()

    async def _astart(self) -> None:
        app = self.build_app()
        # handler_cancellation: a handler is cancelled as soon as its client
        # goes away, which is how both servers notice disconnects promptly.
        self._runner = web.AppRunner(
            app,
            handler_cancellation=True,
            shutdown_timeout=self.shutdown_timeout,
            access_log=None,
        )
        await self._runner.setup()
        for _ in range(self._n_sites):
            site = web.TCPSite(self._runner, LOOPBACK, 0)
            await site.start()
            server = site._server
            assert server is not None
            self.ports.append(server.sockets[0].getsockname()[1])

    async def _astop(self) -> None:
        try:
            await self.on_shutdown()
        finally:
            if self._runner is not None:
                await self._runner.cleanup()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None or self.loop is None:
            return
        if not self._stopped.is_set():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the server loop from any other thread and wait."""
        assert self.loop is not None
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def call(self, fn: Callable[[], T], timeout: float | None = 30.0) -> T:
        async def _c() -> T:
            return fn()

        return self.run(_c(), timeout)


async def sleep_watching(seconds: float, is_gone: Callable[[], bool], step: float = 0.02) -> bool:
    """Sleep up to ``seconds``; return True early if ``is_gone()`` turns true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        if is_gone():
            return True
        left = end - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(step, left))


def transport_gone(request: web.Request) -> bool:
    tr = request.transport
    return tr is None or tr.is_closing()


__all__ = [
    "LOOPBACK",
    "BackgroundAiohttpServer",
    "free_port",
    "sleep_watching",
    "transport_gone",
]


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, step: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)
