"""Fixtures for the ``url`` source: Debian's nginx, a server that ignores Range, another host.

* ``nginx``: nginx serving ``FILES`` (real Range, sendfile, Content-Disposition from its
  config, a throttled and a token-protected location; redirects go to ``other``);
* ``plain``: an aiohttp server that answers every GET with 200 and the whole file;
* ``other``: the same kind of server on 127.0.0.2 ("another host", for redirects);
* ``data_home``: ``XDG_DATA_HOME`` for the test, so the default folder is a temporary one.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelpull import DownloadProgress, download_model
from tests.servers.nginx import NGINX, Nginx
from tests.servers.plain_http import PlainFileServer

MB = 1_000_000
#: the token of this run (the same whichever way this module is imported)
TOKEN = "url-canary-" + hashlib.sha256(f"modelpull url {os.getpid()}".encode()).hexdigest()[:24]
BIG = 6 * MB
#: bytes a second of nginx's /slow/ location, per request (after a first second's worth at once)
SLOW = 500_000


def payload(size: int, seed: str) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: what nginx serves, by name
FILES = {"model.gguf": payload(BIG, "model"), "small.gguf": payload(300_000, "small")}

# 127.0.0.2 is "another host": never through a proxy
for _var in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h]
    if "127.0.0.2" not in _hosts:
        os.environ[_var] = ",".join([*_hosts, "127.0.0.2"])


@pytest.fixture
def other() -> Iterator[PlainFileServer]:
    server = PlainFileServer(host="127.0.0.2")
    server.start()
    for name, data in FILES.items():
        server.add(f"/files/{name}", data)
    yield server
    server.stop()


@pytest.fixture
def nginx(tmp_path_factory: pytest.TempPathFactory, other: PlainFileServer) -> Iterator[Nginx]:
    assert os.path.exists(NGINX), "nginx is missing: apt-get install nginx (scripts/test does)"
    root = tmp_path_factory.mktemp("nginx-root")
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    server = Nginx(root, tmp_path_factory.mktemp("nginx-work"), token=TOKEN, rate=SLOW,
                   redirect_to=other.url)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def plain() -> Iterator[PlainFileServer]:
    server = PlainFileServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user data folder for this test; the url source's default folder is ``<it>/modelpull/url``."""
    home = tmp_path / "data-home"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


async def collect(model: str, **kwargs: Any) -> tuple[list[DownloadProgress], list[float]]:
    """Every event of one ``url`` download, with the time each arrived."""
    events, stamps = [], []
    async for event in download_model("url", model, **kwargs):
        events.append(event)
        stamps.append(time.monotonic())
    return events, stamps


def leftovers(folder: Path) -> list[Path]:
    """Partial files and part state left in a url folder."""
    return [p for p in folder.rglob("*") if p.name.endswith((".incomplete", ".parts.json"))]
