"""Partial downloads are first-class: listed with their bytes, discarded, resumed by pulling again.

Partials are made the ways users make them: a cancelled download, a process
killed with SIGKILL, and huggingface_hub's own ``snapshot_download`` killed
half-way (its orphaned ``.incomplete`` file). They are listed by the library,
``modelpull list --partial`` and ``GET /models?partial=true``, and discarded by
``modelpull rm --partial`` and ``DELETE /models/{provider}/{model}?partial=true``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from modelpull import DownloadStatus, download_model
from modelpull.inventory import discard_partials, list_partials
from tests.servers import wait_until

from .conftest import wait_for

SIZE = 3_000_000


@pytest.fixture
def big_repo(olah) -> tuple[str, bytes]:
    repo_id = f"svc/partial-{uuid.uuid4().hex[:8]}"
    weights = os.urandom(SIZE)
    olah.make_repo(repo_id, {"config.json": b"{}", "model.safetensors": weights})
    return repo_id, weights


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelpull.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})}, check=False)


async def _cancel_after(provider: str, model: str, nbytes: int, **kwargs: Any) -> None:
    async for event in download_model(provider, model, **kwargs):
        if event.status is DownloadStatus.ERROR:
            raise AssertionError(event.message)
        if (event.downloaded_bytes or 0) >= nbytes:
            break


def test_a_cancelled_download_is_listed_discarded_and_resumed(hf_front, big_repo, tmp_path):
    repo_id, weights = big_repo
    cache = tmp_path / "hf"
    hf_front.throttle(1_000_000, repo_id=repo_id, path="model.safetensors")
    asyncio.run(_cancel_after("hf", repo_id, 600_000, base_url=hf_front.endpoint, cache_dir=str(cache)))
    partials = wait_for(lambda: list_partials(cache_dir=str(cache)) or None)
    (partial,) = partials
    assert (partial.provider, partial.model, partial.file) == ("huggingface", repo_id, "model.safetensors")
    assert partial.total_bytes == SIZE and 0 < partial.present_bytes < SIZE
    assert partial.left_by == "modelpull" and partial.source == "hf-cache"
    assert Path(partial.path).stat().st_size <= SIZE and time.time() - partial.modified < 60

    listed = _cli("list", "--partial", "--cache-dir", str(cache), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [p["file"] for p in json.loads(listed.stdout)["partials"]] == ["model.safetensors"]
    table = _cli("list", "--partial", "hf", "--cache-dir", str(cache))
    row = next(line for line in table.stdout.splitlines() if repo_id in line)  # one line, never wrapped
    assert "model.safetensors" in row and "%" in row

    # resuming is pulling again: only the missing bytes are asked for
    hf_front.clear_rules()
    hf_front.clear_log()
    done = asyncio.run(_last("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache)))
    assert done.status is DownloadStatus.COMPLETE
    assert hf_front.file_bytes_sent(repo_id, "model.safetensors") <= SIZE - partial.present_bytes + 65536
    assert list_partials(cache_dir=str(cache)) == []


async def _last(*args: Any, **kwargs: Any) -> Any:
    last = None
    async for event in download_model(*args, **kwargs):
        last = event
    return last


def test_discard_one_model_or_all(hf_front, big_repo, tmp_path):
    repo_id, _ = big_repo
    cache = tmp_path / "hf"
    hf_front.throttle(1_000_000, repo_id=repo_id, path="model.safetensors")
    asyncio.run(_cancel_after("hf", repo_id, 400_000, base_url=hf_front.endpoint, cache_dir=str(cache)))
    (partial,) = wait_for(lambda: list_partials("huggingface", cache_dir=str(cache)) or None)
    with pytest.raises(Exception) as info:
        discard_partials("hf", "svc/not-this-one", cache_dir=str(cache))
    assert getattr(info.value, "code", None) == "not_found"
    out = _cli("rm", "--partial", "hf", repo_id, "--cache-dir", str(cache), "-y")
    assert out.returncode == 0, out.stderr
    assert "discarded 1 partial file" in out.stdout
    assert not Path(partial.path).exists() and not Path(partial.path + ".parts.json").exists()
    assert list_partials(cache_dir=str(cache)) == []
    refused = _cli("rm", "--partial", "--cache-dir", str(cache))
    assert refused.returncode != 0 and "--all" in refused.stderr


def test_huggingface_hubs_own_orphans_are_listed(hf_front, big_repo, tmp_path):
    repo_id, _ = big_repo
    cache = tmp_path / "hf"
    hf_front.throttle(500_000, repo_id=repo_id, path="model.safetensors")
    script = (
        "import sys\nfrom huggingface_hub import snapshot_download\n"
        f"snapshot_download({repo_id!r}, cache_dir={str(cache)!r})\n"
    )
    env = {**os.environ, "HF_ENDPOINT": hf_front.endpoint, "HF_HUB_DISABLE_XET": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # huggingface_hub writes its file in 10 MB chunks: the orphan may still be empty
        wait_until(lambda: list(cache.glob("models--*/blobs/*.incomplete")), 30, 0.05)
        wait_until(lambda: hf_front.file_bytes_sent(repo_id, "model.safetensors") > 300_000, 30, 0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    partials = list_partials(cache_dir=str(cache))
    assert [(p.model, p.left_by, p.total_bytes) for p in partials] == [(repo_id, "huggingface_hub", None)]
    assert partials[0].file.startswith("blob ") and partials[0].source == "hf-cache"
    assert discard_partials("huggingface", repo_id, cache_dir=str(cache)) == partials
    assert not list(cache.glob("models--*/blobs/*.incomplete"))


def test_the_service_lists_and_discards_partials(start_service, hf_front, big_repo, tmp_path):
    repo_id, _ = big_repo
    service = start_service(hf_endpoint=hf_front.endpoint)
    cache = service.dirs["hf"]
    hf_front.throttle(300_000, repo_id=repo_id, path="model.safetensors")
    with service.client() as client:
        job = client.post("/downloads", json={"provider": "hf", "model": repo_id}).json()["id"]
        wait_for(lambda: [p for p in list_partials(cache_dir=str(cache)) if p.file == "model.safetensors"])
        listed = client.get("/models", params={"partial": "true"}).json()["partials"]
        assert ("huggingface", repo_id, "model.safetensors") in [
            (p["provider"], p["model"], p["file"]) for p in listed]
        busy = client.delete(f"/models/huggingface/{repo_id}", params={"partial": "true"})
        assert busy.status_code == 409, busy.text
        client.delete(f"/downloads/{job}")
        wait_for(lambda: client.get(f"/downloads/{job}").json()["state"] == "cancelled")
        gone = client.delete(f"/models/huggingface/{repo_id}", params={"partial": "true"})
        assert gone.status_code == 200, gone.text
        assert "model.safetensors" in [p["file"] for p in gone.json()["discarded"]]
        assert client.get("/models", params={"partial": "true"}).json()["partials"] == []
