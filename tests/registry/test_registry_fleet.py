"""A fleet shares one download: docker-registry in proxy mode in front of the origin.

Two machines (two Ollama stores) pull the same model through the pull-through
cache; the origin's own access log tells how often it served each blob.

Distribution 2.8's pull-through cache fetches a blob it does not hold yet
twice from its origin (one stream to fill its storage, one relayed to the
client: registry/proxy/proxyblobstore.go, ``ServeBlob``), so the first pull
costs the origin up to two GETs per blob; every later pull costs it none.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpull import DownloadStatus, download_model
from tests.servers.registry import DockerRegistry, PushedModel


@pytest.fixture(scope="module")
def pull_through(registry: DockerRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path_factory.mktemp("proxy"), remote=registry.url) as proxy:
        yield proxy


async def pull_into(proxy: DockerRegistry, model: PushedModel, models_dir: Path, **options: object) -> None:
    short = f"{model.repo.split('/')[1]}:{model.tag}"  # a default-host name, sent to the mirror
    events = [e async for e in download_model(
        "ollama-registry", short, base_url=proxy.url, models_dir=str(models_dir), **options
    )]
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    manifest = models_dir / "manifests/registry.ollama.ai" / model.repo / model.tag
    assert manifest.read_bytes() == model.manifest
    for digest, content in model.blobs.items():
        assert (models_dir / "blobs" / f"sha256-{digest.split(':')[1]}").read_bytes() == content


def wait_until_cached(proxy: DockerRegistry, model: PushedModel, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(proxy.has_blob_locally(d) for d in model.blobs):
        assert time.monotonic() < deadline, "the pull-through cache never stored the blobs"
        time.sleep(0.05)


@pytest.mark.parametrize("parts", ["one stream per blob", "ranged parts"])
async def test_two_pulls_through_the_cache_cost_the_origin_one_download(
    registry: DockerRegistry, pull_through: DockerRegistry, tmp_path: Path, parts: str
) -> None:
    model = registry.push_tiny(weights=3_000_000)
    # "ranged parts": 1 MB parts, so the weights go as three parallel Range requests
    options = {"part_size": 1_000_000} if parts == "ranged parts" else {}

    await pull_into(pull_through, model, tmp_path / "machine-a", **options)
    wait_until_cached(pull_through, model)
    first = {d: len(registry.blob_gets(d, model.repo)) for d in model.blobs}

    await pull_into(pull_through, model, tmp_path / "machine-b", **options)
    second = {d: len(registry.blob_gets(d, model.repo)) for d in model.blobs}

    assert second == first, "the second machine's pull reached the origin"
    for digest, count in first.items():
        assert 1 <= count <= 2, (digest, count)  # Distribution's cold-miss double fetch at most
    served = sum(e.bytes for e in registry.blob_gets(repo=model.repo))
    assert served <= 2 * model.total_size
