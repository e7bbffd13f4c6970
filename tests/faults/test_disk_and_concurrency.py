"""Case 7 (disk full, on a small tmpfs as the store) and case 8 (two processes, one model)."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelpull import DownloadStatus
from tests.servers.fault_proxy import FaultProxy
from tests.servers.olah import git_blob_id
from tests.servers.registry import OLLAMA_MODEL, OLLAMA_PARAMS, OLLAMA_TEMPLATE, DockerRegistry

from .conftest import (
    MB,
    Capture,
    Figures,
    Source,
    collect,
    finish,
    hf_repo_source,
    json_lines,
    payload,
    registry_model_source,
    sha256,
    spawn,
    wait_until,
)

COMPLETE, ERROR = DownloadStatus.COMPLETE, DownloadStatus.ERROR


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``small_disk(bytes)``: a fresh tmpfs of that size, unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        assert os.geteuid() == 0, "the disk-full cases mount a tmpfs: run the suite as root"
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 4096, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.name != "filler"]


def check_final_names(store: Path) -> list[Path]:
    """Every file under a final name (a blob named by its digest) holds exactly that content;
    returns them. Partials, part state, locks and temporary files carry names no reader takes."""
    finals = []
    for path in files_in(store):
        if path.name.endswith((".incomplete", ".partial", ".parts.json", ".tmp", ".lock")):
            continue
        name = path.name.removeprefix("sha256-")
        data = path.read_bytes()
        if len(name) == 64:
            assert sha256(data) == name, f"{path} is not what its name says"
        elif len(name) == 40:
            assert git_blob_id(data) == name, f"{path} is not what its name says"
        else:
            raise AssertionError(f"unexpected file {path} in a store whose model was not published")
        finals.append(path)
    return finals


# ------------------------------------------------------------------ 7. disk full
async def test_7_a_plan_that_does_not_fit_is_disk_full_before_the_first_byte(
    source: Source, small_disk: Callable[[int], Path], figures: Figures
) -> None:
    disk = small_disk(4 * MB)  # the model is 6 MB
    source.store = disk / "store"
    key = "cache_dir" if source.provider == "huggingface" else "models_dir"
    source.options[key] = str(source.store)

    events = await source.pull()

    assert events[-1].status is ERROR and events[-1].error_code == "disk_full", events[-1]
    message = events[-1].message
    assert "space" in message and "again" in message, message
    assert source.proxy.body_bytes(source.big_path) == 0  # not one byte of the model was fetched
    assert not source.published()
    assert [p for p in files_in(disk) if not p.name.endswith(".lock")] == []
    figures.record("7-disk-full-plan", source.provider, disk_bytes=4 * MB, model_bytes=source.total_size,
                   body_bytes_fetched=0)


@pytest.mark.parametrize("provider", ["huggingface", "ollama-registry"])
async def test_7_a_disk_that_fills_mid_way_is_disk_full_and_nothing_looks_complete(
    olah: Any, hf_front: Any, registry: DockerRegistry, make_proxy: Callable[..., FaultProxy],
    small_disk: Callable[[int], Path], figures: Figures, provider: str,
) -> None:
    disk = small_disk(12 * MB)
    store = disk / "store"
    source, first, _ = _two_big_files(provider, olah, hf_front, registry, make_proxy, store)
    source.proxy.throttle(4 * MB, path=first)
    # One file at a time: while the first streams in, something else fills the disk.
    download = source.pull(max_parallel_files=1, stall_timeout=2.0, max_retries=2)

    task = asyncio.ensure_future(download)
    await asyncio.to_thread(wait_until, lambda: source.proxy.body_bytes(first) >= 1 * MB, 30)
    filler = await asyncio.to_thread(fill, disk)
    events = await task

    last = events[-1]
    assert last.status is ERROR and last.error_code == "disk_full", last
    assert "again" in last.message, last.message
    assert not source.published()
    figures.record("7-disk-full-midway-message", provider, message=last.message)
    complete = check_final_names(store)
    assert complete, "the file fetched before the disk filled up should have been kept"
    fetched_before = source.proxy.body_bytes()

    filler.unlink()
    source.proxy.clear()
    events = await source.pull(max_parallel_files=1, stall_timeout=2.0)
    assert events[-1].status is COMPLETE, events[-1].message
    source.verify()
    refetched = source.proxy.body_bytes(first) - 3 * MB
    assert refetched == 0  # the first file was kept, not fetched again
    figures.record("7-disk-full-midway", provider, disk_bytes=12 * MB,
                   fetched_before_full=fetched_before, refetched_after_freeing=refetched)


def _two_big_files(provider: str, olah: Any, hf_front: Any, registry: DockerRegistry,
                   make_proxy: Callable[..., FaultProxy], store: Path) -> tuple[Source, str, str]:
    """A model whose two big files (3 MB + 6 MB) fit a 12 MB disk only while it stays empty."""
    if provider == "huggingface":
        source = hf_repo_source(olah, hf_front, make_proxy(hf_front.endpoint), store, size=6 * MB,
                                extra={"a-first.safetensors": payload(3 * MB, uuid.uuid4().hex)})
        return source, "*/resolve/*/a-first.safetensors", source.big_path
    proxy = make_proxy(registry.url)
    repo = f"library/full{uuid.uuid4().hex[:8]}"
    first_blob, second_blob = payload(3 * MB, repo + "1"), payload(6 * MB, repo + "2")
    model = registry.push(repo, "1b", [(OLLAMA_MODEL, first_blob), (OLLAMA_MODEL, second_blob),
                                       (OLLAMA_TEMPLATE, b"{{ .Prompt }}"), (OLLAMA_PARAMS, b"{}")])
    manifest = store / "manifests" / proxy.netloc / repo / "1b"

    def locate() -> dict[str, Path]:
        if not manifest.is_file():
            return {}
        found = {"manifest": manifest}
        found.update({d: store / "blobs" / ("sha256-" + d.split(":")[1]) for d in model.blobs})
        return found

    second = f"/v2/{repo}/blobs/sha256:{sha256(second_blob)}"
    source = Source(
        provider="ollama-registry", model=f"{proxy.netloc}/{repo}:1b", proxy=proxy, base_url=None,
        options={"insecure": True, "models_dir": str(store)}, token=None, big_path=second,
        big_size=len(second_blob), big_hex=sha256(second_blob), meta_path=f"/v2/{repo}/manifests/*", total_size=model.total_size, store=store,
        expected={d: d.split(":")[1] for d in model.blobs} | {"manifest": sha256(model.manifest)},
        locate=locate,
    )
    return source, f"/v2/{repo}/blobs/sha256:{sha256(first_blob)}", second


async def test_7_an_ollama_server_whose_disk_fills_up_is_disk_full(
    ollama_emulator: Any, make_proxy: Callable[..., FaultProxy]
) -> None:
    """The Ollama server writes to its own disk; its words for a full disk become ``disk_full``."""
    name = f"full{uuid.uuid4().hex[:6]}:1b"
    ollama_emulator.add_model(name, [2 * MB, 100], bytes_per_sec=8 * MB)
    ollama_emulator.fail_after(name, MB, error="write /root/.ollama/models/blobs/sha256-0a1b-partial-3: "
                                               "no space left on device")
    proxy = make_proxy(ollama_emulator.base_url)
    events = await collect("ollama", name, base_url=proxy.url)
    assert events[-1].error_code == "disk_full", events[-1]
    assert "no space left" in events[-1].message and "again" in events[-1].message
    assert not ollama_emulator.is_pulled(name)


# ------------------------------------------------------------------ 8. two processes at once
def test_8_two_processes_pulling_one_model_fetch_it_once(
    olah: Any, hf_front: Any, registry: DockerRegistry, make_proxy: Callable[..., FaultProxy],
    tmp_path: Path, figures: Figures, capture: Capture,
) -> None:
    sources = [
        hf_repo_source(olah, hf_front, make_proxy(hf_front.endpoint), tmp_path / "hf-cache"),
        registry_model_source(registry, make_proxy(registry.url), tmp_path / "ollama"),
    ]
    for source in sources:
        source.proxy.throttle(3 * MB, path=source.big_path)  # long enough to overlap
    procs = []
    for source in sources:
        for _ in range(2):
            capture.canary_uses += bool(source.token)
            procs.append((source, spawn(source.cli_args(), env=source.cli_env())))
    for source, proc in procs:
        out, err = finish(proc)
        assert proc.returncode == 0, err
        events = json_lines(out)
        assert events[-1]["status"] == "complete", events[-1]
        done = [e["downloaded_bytes"] for e in events]
        assert done == sorted(done)
    for source in sources:
        source.verify()
        assert not source.leftovers(), source.leftovers()
        sent = source.proxy.body_bytes(source.big_path)
        assert sent == source.big_size, f"{source.provider}: {sent} bytes sent for a {source.big_size}-byte file"
        assert len(source.proxy.requests(source.big_path)) >= 1
        figures.record("8-two-processes", source.provider, processes=2, file_bytes=source.big_size,
                       bytes_sent=sent)


def test_8_two_processes_pulling_through_one_ollama_server(
    ollama_emulator: Any, make_proxy: Callable[..., FaultProxy],
) -> None:
    name = f"twice{uuid.uuid4().hex[:6]}:1b"
    ollama_emulator.add_model(name, [4 * MB, 100], bytes_per_sec=4 * MB)
    proxy = make_proxy(ollama_emulator.base_url)
    args = ["pull", "ollama", name, "--base-url", proxy.url, "--json"]
    procs = [spawn([sys.executable, "-m", "modelpull.cli", *args], env=dict(os.environ)) for _ in range(2)]
    for proc in procs:
        out, err = finish(proc)
        assert proc.returncode == 0, err
        assert json_lines(out)[-1]["status"] == "complete"
    assert ollama_emulator.is_pulled(name)
    assert len(proxy.requests("/api/pull")) == 2

