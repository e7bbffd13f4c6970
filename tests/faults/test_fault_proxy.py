"""The fault proxy itself does what the other fault tests rely on."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web

from tests.servers import BackgroundAiohttpServer
from tests.servers.fault_proxy import FaultProxy

from .conftest import payload

DATA = payload(300_000, "fault-proxy")


class Upstream(BackgroundAiohttpServer):
    """Serves DATA with a Content-Length (/fixed, honouring Range) or chunked (/chunked)."""

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/fixed", self.fixed)
        app.router.add_get("/chunked", self.chunked)
        return app

    async def fixed(self, request: web.Request) -> web.Response:
        start = int(request.headers.get("Range", "bytes=0-").split("=")[1].split("-")[0])
        status = 206 if start else 200
        return web.Response(body=DATA[start:], status=status, content_type="application/octet-stream")

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(DATA), 7_000):
            await response.write(DATA[i:i + 7_000])
        await response.write_eof()
        return response


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    upstream = Upstream()
    upstream.start()
    with FaultProxy(f"http://127.0.0.1:{upstream.ports[0]}") as fault_proxy:
        yield fault_proxy
    upstream.stop()


def get(proxy: FaultProxy, path: str, **headers: str) -> httpx.Response:
    return httpx.get(proxy.url + path, headers=headers, timeout=10, trust_env=False)


def test_forwards_bodies_ranges_and_logs_no_credential(proxy: FaultProxy) -> None:
    assert get(proxy, "/fixed").content == DATA
    assert get(proxy, "/chunked").content == DATA
    ranged = get(proxy, "/fixed", Range="bytes=1000-", Authorization="Bearer secret-value-42")
    assert ranged.status_code == 206 and ranged.content == DATA[1000:]
    assert proxy.wait_idle()  # the client can have the last byte before the proxy counts it
    log = proxy.log
    assert [e.range for e in log] == [None, None, "bytes=1000-"]
    assert [e.auth_present for e in log] == [False, False, True]
    assert "secret-value-42" not in repr(log) + proxy.text()
    assert proxy.body_bytes("/fixed") == len(DATA) * 2 - 1000
    assert proxy.connections == 3


@pytest.mark.parametrize("path", ["/fixed", "/chunked"])
def test_cut_truncate_and_flip_happen_at_the_byte_asked(proxy: FaultProxy, path: str) -> None:
    proxy.cut_after(50_000, path=path)
    with pytest.raises(httpx.HTTPError):
        get(proxy, path)
    assert proxy.wait_idle()
    assert proxy.log[-1].bytes_sent == 50_000 and proxy.faults_fired("cut") == ["cut@50000"]

    proxy.truncate(60_000, path=path)
    with pytest.raises(httpx.HTTPError):
        get(proxy, path)  # the announced length never arrives
    assert proxy.wait_idle()
    assert proxy.log[-1].bytes_sent == 60_000

    proxy.flip(at=12_345, path=path)
    body = get(proxy, path).content
    diff = [i for i, (a, b) in enumerate(zip(body, DATA)) if a != b]
    assert diff == [12_345] and len(body) == len(DATA)
    assert get(proxy, path).content == DATA  # times=1: used up


def test_errors_hangs_stalls_throttle_and_rule_counts(proxy: FaultProxy) -> None:
    proxy.error(503, retry_after=2, path="/fixed", times=2, skip=1)
    statuses = [get(proxy, "/fixed").status_code for _ in range(4)]
    assert statuses == [200, 503, 503, 200]
    assert proxy.log[1].faults == ["error:503"]

    proxy.reset_mid_header(path="/fixed")
    with pytest.raises(httpx.HTTPError):
        get(proxy, "/fixed")

    proxy.stall(0.4, after_bytes=1000, path="/fixed")
    started = time.monotonic()
    assert get(proxy, "/fixed").content == DATA
    assert time.monotonic() - started >= 0.4

    proxy.hang(0.3, path="/fixed")
    started = time.monotonic()
    assert get(proxy, "/fixed").status_code == 200
    assert time.monotonic() - started >= 0.3

    rule = proxy.throttle(600_000, path="/fixed")
    started = time.monotonic()
    assert get(proxy, "/fixed").content == DATA
    assert time.monotonic() - started >= 0.4  # 300 kB at 600 kB/s
    proxy.remove(rule)

    proxy.stall(30, path="/fixed")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(proxy.url + "/fixed", timeout=0.5, trust_env=False)
    proxy.wait_idle()
    stalled = proxy.log[-1]
    assert stalled.detected_after is not None and 0.4 <= stalled.detected_after < 2

    proxy.respond("/x", status=418, body=b"teapot", content_type="text/plain")
    proxy.redirect("http://127.0.0.2:1", path="/elsewhere")
    assert get(proxy, "/x").content == b"teapot"
    moved = get(proxy, "/elsewhere?q=1")
    assert moved.status_code == 302 and moved.headers["location"] == "http://127.0.0.2:1/elsewhere?q=1"
