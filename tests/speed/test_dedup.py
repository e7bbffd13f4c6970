"""One copy on disk: a blob another store already holds is linked and verified, not fetched.

The stores are the real ones under ``tmp_path``; the Hub is olah behind the
Hub front and the registry is Debian's docker-registry behind the fault proxy,
so what crossed the network is counted where it was served. "One copy" is
checked on the inodes: a hard link is the same file under two names.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpull import DownloadStatus, plan_download
from modelpull.inventory import delete_model, list_models
from tests.servers.registry import OLLAMA_MODEL, DockerRegistry
from tests.speed.conftest import collect

SIZE = 3_000_000


def fake_gguf(seed: int) -> bytes:
    return b"GGUF" + struct.pack("<I", 3) + random.Random(seed).randbytes(SIZE - 8)


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Every store in its own folder under tmp_path, found the way users' tools find them."""
    found = {name: tmp_path / name for name in ("hf", "lmstudio", "ollama", "docker", "modelscope")}
    monkeypatch.setenv("HF_HUB_CACHE", str(found["hf"]))
    monkeypatch.setenv("OLLAMA_MODELS", str(found["ollama"]))
    monkeypatch.setenv("MODELS_PATH", str(found["docker"]))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(found["modelscope"]))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # LM Studio's settings are looked for there
    return found


def gguf_repo(olah, name: str, seed: int) -> tuple[str, str, bytes]:
    repo = f"speed/{name}-GGUF"
    data = fake_gguf(seed)
    olah.make_repo(repo, {f"{name}-Q4_K_M.gguf": data, "README.md": b"# a model\n"})
    return repo, f"{name}-Q4_K_M.gguf", data


def one_file(folder: Path, suffix: str) -> Path:
    found = [p for p in folder.rglob(f"*{suffix}") if p.is_file() and ".modelpull" not in p.parts]
    assert len(found) == 1, found
    return found[0]


async def test_gguf_then_lm_studio_fetches_nothing_twice_and_keeps_one_copy(
    olah, hf_front, stores: dict[str, Path]
) -> None:
    repo, name, data = gguf_repo(olah, "Shared", 1)
    hf_front.serve_lfs_from_disk()
    first = await collect("gguf", f"{repo}:Q4_K_M", base_url=hf_front.endpoint)
    assert first[-1].status is DownloadStatus.COMPLETE, first[-1].message
    assert hf_front.file_bytes_sent(repo, name) == SIZE
    hf_front.clear_log()

    plan = await plan_download("lmstudio", f"{repo}:Q4_K_M", base_url=hf_front.endpoint,
                               models_dir=str(stores["lmstudio"]))
    assert any("already on this machine" in note for note in plan.notes), plan.notes
    second = await collect("lmstudio", f"{repo}:Q4_K_M", base_url=hf_front.endpoint,
                           models_dir=str(stores["lmstudio"]))
    assert second[-1].status is DownloadStatus.COMPLETE, second[-1].message
    assert second[-1].downloaded_bytes == second[-1].total_bytes == SIZE

    assert hf_front.file_bytes_sent(repo, name) == 0  # not a byte of it crossed the network
    in_lmstudio = stores["lmstudio"] / repo / name
    in_hf = one_file(stores["hf"], hashlib.sha256(data).hexdigest())
    assert in_lmstudio.read_bytes() == data
    assert os.stat(in_lmstudio).st_ino == os.stat(in_hf).st_ino  # one copy on disk, two names
    assert os.stat(in_lmstudio).st_nlink == 2

    listed = {m.provider: m for m in list_models(cache_dir=str(stores["hf"]), lmstudio_dir=str(stores["lmstudio"]),
                                                   ollama_source="store")}
    assert listed["huggingface"].shared_bytes == SIZE and listed["lmstudio"].shared_bytes == SIZE

    # deleting it from one store leaves the other's intact (never a symbolic link)
    delete_model("gguf", repo, cache_dir=str(stores["hf"]))
    assert not in_hf.exists()
    assert not in_lmstudio.is_symlink() and hashlib.sha256(in_lmstudio.read_bytes()).digest() == hashlib.sha256(data).digest()
    lmstudio = next(m for m in list_models("lmstudio", lmstudio_dir=str(stores["lmstudio"])) if m.name == repo)
    assert lmstudio.shared_bytes == 0


async def test_a_corrupt_copy_in_another_store_is_not_trusted(
    olah, hf_front, stores: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    repo, name, data = gguf_repo(olah, "Corrupt", 2)
    hf_front.serve_lfs_from_disk()
    digest = hashlib.sha256(data).hexdigest()
    # an Ollama blob named by the digest, of the right size, whose bytes differ
    lying = stores["ollama"] / "blobs" / f"sha256-{digest}"
    lying.parent.mkdir(parents=True)
    bad = bytearray(data)
    bad[SIZE // 2] ^= 0xFF
    lying.write_bytes(bytes(bad))

    with caplog.at_level("WARNING", logger="modelpull.transfer"):
        events = await collect("lmstudio", f"{repo}:Q4_K_M", base_url=hf_front.endpoint,
                               models_dir=str(stores["lmstudio"]))

    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    # it was looked at, checked, and refused...
    assert any(str(lying) in r.getMessage() and "digest differs" in r.getMessage() for r in caplog.records)
    assert hf_front.file_bytes_sent(repo, name) == SIZE  # ...so the file was fetched after all
    result = stores["lmstudio"] / repo / name
    assert result.read_bytes() == data
    assert os.stat(result).st_ino != os.stat(lying).st_ino
    assert lying.read_bytes() == bytes(bad)  # the other store's file is not ours to touch
    assert not list((stores["lmstudio"] / ".modelpull").rglob("*.copy"))


async def test_a_hub_gguf_becomes_an_ollama_blob_without_a_download(
    olah, hf_front, registry: DockerRegistry, make_proxy, stores: dict[str, Path]
) -> None:
    repo, _, data = gguf_repo(olah, "ToOllama", 3)
    hf_front.serve_lfs_from_disk()
    assert (await collect("gguf", f"{repo}:Q4_K_M", base_url=hf_front.endpoint))[-1].status is DownloadStatus.COMPLETE
    model = registry.push("library/shared-gguf", "q4", [(OLLAMA_MODEL, data)])
    proxy = make_proxy(registry.url)
    weights = f"/v2/{model.repo}/blobs/sha256:{hashlib.sha256(data).hexdigest()}"

    events = await collect("ollama-registry", f"{proxy.netloc}/{model.repo}:{model.tag}", insecure=True)

    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert proxy.requests(weights, method="GET") == []  # the weights never crossed the network
    blob = stores["ollama"] / "blobs" / f"sha256-{hashlib.sha256(data).hexdigest()}"
    assert os.stat(blob).st_ino == os.stat(one_file(stores["hf"], hashlib.sha256(data).hexdigest())).st_ino
    listed = next(m for m in list_models("ollama-registry", ollama_models_dir=str(stores["ollama"]),
                                         ollama_source="store") if "shared-gguf" in m.name)
    assert listed.shared_bytes == SIZE


@pytest.fixture
def other_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs: another filesystem, where no hard link can reach."""
    assert os.geteuid() == 0, "this test mounts a tmpfs: run the suite as root"
    where = tmp_path / "other-disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_across_filesystems_the_copy_is_a_copy_still_not_a_download(
    olah, hf_front, stores: dict[str, Path], other_disk: Path
) -> None:
    repo, name, data = gguf_repo(olah, "Elsewhere", 4)
    hf_front.serve_lfs_from_disk()
    assert (await collect("gguf", f"{repo}:Q4_K_M", base_url=hf_front.endpoint))[-1].status is DownloadStatus.COMPLETE
    hf_front.clear_log()
    assert os.stat(other_disk).st_dev != os.stat(stores["hf"]).st_dev

    events = await collect("lmstudio", f"{repo}:Q4_K_M", base_url=hf_front.endpoint, models_dir=str(other_disk))

    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert hf_front.file_bytes_sent(repo, name) == 0
    result = other_disk / repo / name
    assert result.read_bytes() == data
    assert os.stat(result).st_nlink == 1  # its own copy: deleting either leaves the other


async def test_dedup_false_fetches_from_the_source(olah, hf_front, stores: dict[str, Path]) -> None:
    repo, name, _ = gguf_repo(olah, "NoDedup", 5)
    hf_front.serve_lfs_from_disk()
    assert (await collect("gguf", f"{repo}:Q4_K_M", base_url=hf_front.endpoint))[-1].status is DownloadStatus.COMPLETE
    hf_front.clear_log()
    events = await collect("lmstudio", f"{repo}:Q4_K_M", base_url=hf_front.endpoint,
                           models_dir=str(stores["lmstudio"]), dedup=False)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert hf_front.file_bytes_sent(repo, name) == SIZE
    assert os.stat(stores["lmstudio"] / repo / name).st_nlink == 1


async def test_a_linked_file_is_published_durably(olah, hf_front, stores: dict[str, Path]) -> None:
    """Flushed before it gets its name, its folder flushed after: as a downloaded file (strace)."""
    from tests.servers.strace import assert_durable, traced_download

    repo, name, _ = gguf_repo(olah, "Durable", 6)
    hf_front.serve_lfs_from_disk()
    assert (await collect("gguf", f"{repo}:Q4_K_M", base_url=hf_front.endpoint))[-1].status is DownloadStatus.COMPLETE
    hf_front.clear_log()
    calls, last = traced_download("lmstudio", f"{repo}:Q4_K_M", base_url=hf_front.endpoint,
                                  models_dir=str(stores["lmstudio"]))
    assert last["status"] == "complete", last
    assert hf_front.file_bytes_sent(repo, name) == 0  # it was linked, not fetched
    assert_durable(calls, (stores["lmstudio"] / repo / name).resolve())
