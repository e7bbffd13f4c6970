"""oci offline and cache-first: a model complete in Docker Model Runner's store never needs the registry."""

from __future__ import annotations

from pathlib import Path

import tests.servers.oci_artifacts as build
from modelpull import DownloadStatus, download_model
from tests.servers.registry import DockerRegistry, RegistryFront

COMPLETE = DownloadStatus.COMPLETE


async def pull(model: str, **kwargs):
    return [event async for event in download_model("oci", model, **kwargs)]


def served_from_disk(events) -> bool:
    return [e.status for e in events] == [DownloadStatus.STARTING, COMPLETE]


async def test_offline_and_a_registry_gone_serve_the_store(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    root = tmp_path / "models"
    with RegistryFront(registry.url) as front:
        name = f"{front.netloc}/{pushed.repo}:{pushed.tag}"
        first = await pull(name, insecure=True, models_dir=str(root))
        assert first[-1].status is COMPLETE, first[-1].message
        asked = len(front.seen)
        offline = await pull(name, insecure=True, models_dir=str(root), offline=True)
        assert served_from_disk(offline) and offline[-1].path == first[-1].path
        assert "offline" in offline[-1].message and len(front.seen) == asked
    gone = await pull(name, insecure=True, models_dir=str(root))  # the front's port is closed now
    assert served_from_disk(gone), [e.message for e in gone]
    assert gone[-1].path == first[-1].path and "could not be used" in gone[-1].message
    files = {p.relative_to(gone[-1].path).as_posix(): p.read_bytes() for p in Path(gone[-1].path).rglob("*")
             if p.is_file()}
    assert files == pushed.files


async def test_a_digest_on_disk_needs_no_network(registry: DockerRegistry, front: RegistryFront,
                                                 tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    root = tmp_path / "models"
    name = f"{front.netloc}/{pushed.repo}@{pushed.digest}"
    first = await pull(name, insecure=True, models_dir=str(root))
    assert first[-1].status is COMPLETE, first[-1].message
    asked = len(front.seen)
    again = await pull(name, insecure=True, models_dir=str(root))
    assert served_from_disk(again) and "pinned" in again[-1].message
    assert len(front.seen) == asked


async def test_offline_with_nothing_or_a_missing_blob_says_what(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.docker_v01_gguf(registry)
    root = tmp_path / "models"
    name = f"{registry.host}/{pushed.repo}:{pushed.tag}"
    nothing = await pull(name, insecure=True, models_dir=str(root), offline=True)
    assert nothing[-1].error_code == "offline" and "nothing of it" in nothing[-1].message
    first = await pull(name, insecure=True, models_dir=str(root))
    assert first[-1].status is COMPLETE
    weights = next(d for d in pushed.manifest_json["layers"] if d["size"] > 1000)["digest"]
    (root / "blobs" / "sha256" / weights[7:]).unlink()
    missing = await pull(name, insecure=True, models_dir=str(root), offline=True)
    assert missing[-1].error_code == "offline" and weights[7:19] in missing[-1].message
