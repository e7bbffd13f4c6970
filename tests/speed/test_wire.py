"""The engine's lean HTTP/1.1 client: TLS, redirects and keep-alive on a real server; when it steps aside.

The fault suite already runs every transfer fault through it (cut, stalled,
truncated, flipped bodies, 503/429 with Retry-After, hostile redirects); here:
a download over https with a certificate the machine trusts (``SSL_CERT_FILE``)
through a redirect, and the cases it leaves to aiohttp (a proxy).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import os
import random
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yarl import URL

from modelpull._transfer.wire import WirePool

SIZE = 20_000_000


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA): (certificate, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelpull test server")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Seen:
    path: str
    range: str | None
    connection: int
    headers: list[str]


class TlsFileServer:
    """``/weights.bin`` with Range over https; ``/old/weights.bin`` redirects to it. Logs requests."""

    def __init__(self, folder: Path, data: bytes) -> None:
        self.cert, self.key = _certificate(folder)
        (folder / "weights.bin").write_bytes(data)
        self.folder = folder
        self.requests: list[Seen] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()

    def __enter__(self) -> TlsFileServer:  # noqa: PYI034 - not subclassed
        threading.Thread(target=self._main, daemon=True).start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def _main(self) -> None:
        self._loop = loop = asyncio.new_event_loop()

        def seen(request: web.Request) -> None:
            names = [name.decode() for name, _ in request.raw_headers]
            self.requests.append(Seen(request.path, request.headers.get("Range"), id(request.transport), names))

        async def weights(request: web.Request) -> web.StreamResponse:
            seen(request)
            return web.FileResponse(self.folder / "weights.bin")

        async def old(request: web.Request) -> web.StreamResponse:
            seen(request)
            raise web.HTTPFound("/weights.bin")

        app = web.Application()
        app.router.add_route("*", "/weights.bin", weights)
        app.router.add_route("*", "/old/weights.bin", old)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsFileServer]:
    (tmp_path / "srv").mkdir()
    with TlsFileServer(tmp_path / "srv", random.Random(11).randbytes(SIZE)) as server:
        yield server


def test_a_download_over_https_through_a_redirect_uses_the_lean_client(
    tls_server: TlsFileServer, tmp_path: Path
) -> None:
    data = (tls_server.folder / "weights.bin").read_bytes()
    url = f"https://127.0.0.1:{tls_server.port}/old/weights.bin"
    # a process of its own: aiohttp reads the trusted certificates when it is imported
    env = {**os.environ, "SSL_CERT_FILE": str(tls_server.cert)}
    out = subprocess.run(
        [sys.executable, "-m", "modelpull.cli", "pull", "url", url, "-o", f"sha256={hashlib.sha256(data).hexdigest()}",
         "-o", f"local_dir={tmp_path / 'out'}", "-o", "part_size=4000000", "-o", "max_connections=2",
         "-o", "policy=ollama", "--json"],  # Ollama's policy: every part a request of its own
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["status"] == "complete", (last, out.stderr[-2000:])
    assert (tmp_path / "out" / "weights.bin").read_bytes() == data
    ranged = [r for r in tls_server.requests if r.path == "/weights.bin" and (r.range or "").startswith("bytes=")]
    assert len({r.range for r in ranged}) >= 5, tls_server.requests  # every 4 MB part on its own request
    # the parts came through the lean client (its headers, in its order), redirect followed...
    assert all(r.headers[:3] == ["Host", "User-Agent", "Accept"] for r in ranged), [r.headers for r in ranged]
    assert any(r.path == "/old/weights.bin" and r.headers[:3] == ["Host", "User-Agent", "Accept"]
               for r in tls_server.requests)
    # ...and over connections kept alive between the parts: fewer connections than requests
    assert len({r.connection for r in ranged}) < len(ranged), tls_server.requests


def test_a_url_behind_a_proxy_is_left_to_the_general_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert WirePool.usable(URL("https://cdn.example/model.bin"))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert not WirePool.usable(URL("https://cdn.example/model.bin"))
    assert WirePool.usable(URL("http://cdn.example/model.bin"))  # that scheme has no proxy
    monkeypatch.setenv("NO_PROXY", "cdn.example")
    assert WirePool.usable(URL("https://cdn.example/model.bin"))
    assert not WirePool.usable(URL("ftp://cdn.example/model.bin"))
