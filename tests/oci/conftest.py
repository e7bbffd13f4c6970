"""Fixtures for the ``oci`` source's pure parts: a real docker-registry, and reading it back.

* ``registry`` (session): Debian's docker-registry on a loopback port (open, no auth).
* ``tokens`` / ``auth_registry`` (session): a token realm like ``auth.docker.io`` and a
  second docker-registry that serves ``registry``'s storage only to Bearer tokens from it.
* :func:`fetch_artifact` reads a manifest and its config back with plain HTTP.
* :func:`materialise` lays a described artifact out in a folder (raw layers placed,
  tar layers unpacked) from blobs fetched with plain HTTP.
* ``front`` (function): a :class:`RegistryFront` before ``registry`` that counts blob
  bytes and ``Range`` headers and can throttle, lie or demand tokens.
* ``small_disk`` (function): ``small_disk(bytes)`` mounts a fresh tmpfs of that size
  (root only), unmounted after the test.
* ``start_service`` (function): ``modelpull serve`` in a thread (tests/service/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from modelpull._oci.artifacts import FilePlacement, ModelArtifact, UnpackPlacement
from modelpull._unpack import unpack_tar
from tests.servers.registry import DockerRegistry, RegistryFront
from tests.servers.token_server import TokenAuthRegistry, TokenServer
from tests.service.conftest import start_service  # noqa: F401  (modelpull serve, for the inventory tests)

ACCEPT = (
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# 127.0.0.2 is "another host" (a CDN a registry redirects to): never through a proxy.
for _var in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h]
    if "127.0.0.2" not in _hosts:
        os.environ[_var] = ",".join([*_hosts, "127.0.0.2"])


@dataclass
class Fetched:
    manifest: bytes
    headers: dict[str, str]
    config: bytes

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.manifest)
        return data


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    with _OPENER.open(request, timeout=30) as response:
        return response.read(), dict(response.headers)


def fetch_artifact(base_url: str, repo: str, reference: str, headers: dict[str, str] | None = None) -> Fetched:
    """The manifest (and, unless it is an index, its config blob) as a client reads them."""
    manifest, got = http_get(f"{base_url}/v2/{repo}/manifests/{reference}", {"Accept": ACCEPT, **(headers or {})})
    data = json.loads(manifest)
    config = b""
    if isinstance(data.get("config"), dict):
        config, _ = http_get(f"{base_url}/v2/{repo}/blobs/{data['config']['digest']}", headers)
    return Fetched(manifest, got, config)


def materialise(base_url: str, repo: str, artifact: ModelArtifact, folder: Path, work: Path) -> None:
    """Fetch every layer and put it where the description says, as a provider would."""
    work.mkdir(parents=True, exist_ok=True)
    placed = [layer.path for layer in artifact.layers if layer.path is not None]
    reserved = list(placed)
    for layer in artifact.layers:
        body, _ = http_get(f"{base_url}/v2/{repo}/blobs/{layer.digest}")
        if isinstance(layer.placement, FilePlacement):
            target = folder.joinpath(*layer.placement.path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
        elif isinstance(layer.placement, UnpackPlacement):
            blob = work / layer.digest.replace(":", "-")
            blob.write_bytes(body)
            inside = layer.placement.folder
            # unpack_tar's reserved paths are relative to the folder it unpacks into
            mine = [p.relative_to(inside) for p in reserved if inside == PurePosixPath(".") or inside in p.parents]
            written = unpack_tar(blob, folder.joinpath(*inside.parts), layer.placement.compression, reserved=mine)
            reserved.extend(inside / p for p in written)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path_factory.mktemp("oci-registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path_factory.mktemp("oci-tokens"), credentials={"alice": "s3cret"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def auth_registry(
    tmp_path_factory: pytest.TempPathFactory, tokens: TokenServer, registry: DockerRegistry
) -> Iterator[TokenAuthRegistry]:
    with TokenAuthRegistry(tmp_path_factory.mktemp("oci-auth-registry"), tokens, registry) as reg:
        yield reg


@pytest.fixture
def front(registry: DockerRegistry) -> Iterator[RegistryFront]:
    with RegistryFront(registry.url) as srv:
        yield srv


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        assert os.geteuid() == 0, "the disk-full cases mount a tmpfs: run the tests as root"
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
