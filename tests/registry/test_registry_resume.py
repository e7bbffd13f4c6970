"""A CLI pull killed mid-blob resumes where it stopped; a corrupt blob is never published."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from modelpull import DownloadStatus, download_model
from tests.servers.registry import DockerRegistry, RegistryFront

WEIGHTS = 24_000_000
RATE = 4_000_000  # bytes/s per connection while the first run is to be killed


def cli_args(name: str, models_dir: Path) -> list[str]:
    return [sys.executable, "-m", "modelpull.cli", "pull", "ollama-registry", name,
            "-o", "insecure=true", "-o", f"models_dir={models_dir}", "--json"]


def part_state_done(state_file: Path) -> int:
    try:
        parts = json.loads(state_file.read_text())["parts"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(done - start for start, _, done in parts)


def test_sigkill_mid_blob_then_rerun_fetches_little_twice(
    registry: DockerRegistry, front: RegistryFront, tmp_path: Path
) -> None:
    model = registry.push_tiny(weights=WEIGHTS)
    weights = model.layer_digests[0]
    models_dir = tmp_path / "models"
    name = f"{front.netloc}/{model.repo}:{model.tag}"
    state_file = models_dir / ".modelpull" / f"sha256-{weights.split(':')[1]}.partial.parts.json"

    front.rate = RATE
    first = subprocess.Popen(cli_args(name, models_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # Kill right after a part-state save shows about a third of the blob on disk.
        while part_state_done(state_file) < WEIGHTS // 3:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the pull never got a third of the way"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    served_first = front.served[weights]
    assert WEIGHTS // 3 <= served_first < WEIGHTS  # killed mid-blob
    assert not (models_dir / "manifests").exists()
    assert not (models_dir / "blobs" / f"sha256-{weights.split(':')[1]}").exists()

    front.rate = None
    second = subprocess.run(cli_args(name, models_dir), capture_output=True, text=True, timeout=120,
                            check=False)
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in second.stdout.splitlines()]
    assert events[-1]["status"] == "complete"
    assert events[0]["downloaded_bytes"] >= WEIGHTS // 3  # the rerun started from what was on disk

    fetched_twice = front.served[weights] - WEIGHTS
    assert 0 <= fetched_twice < WEIGHTS // 10, fetched_twice
    resumed = [s.headers.get("Range", "") for s in front.blob_requests() if s.path.endswith(weights)]
    assert any(r.startswith("bytes=") and not r.startswith("bytes=0-") for r in resumed), resumed
    for digest, content in model.blobs.items():
        blob = models_dir / "blobs" / f"sha256-{digest.split(':')[1]}"
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == hashlib.sha256(content).hexdigest()
    manifest = models_dir / "manifests" / front.netloc / model.repo / model.tag
    assert manifest.read_bytes() == model.manifest
    assert not any(p.name.endswith((".partial", ".parts.json")) for p in models_dir.rglob("*"))


async def test_a_corrupt_blob_is_a_checksum_mismatch_and_nothing_is_published(
    registry: DockerRegistry, front: RegistryFront, tmp_path: Path
) -> None:
    model = registry.push_tiny(weights=2_000_000)
    weights = model.layer_digests[0]
    final = tmp_path / "models" / "blobs" / f"sha256-{weights.split(':')[1]}"
    name = f"{front.netloc}/{model.repo}:{model.tag}"
    front.corrupt.add(weights)

    events = [e async for e in download_model("ollama-registry", name, insecure=True,
                                               models_dir=str(tmp_path / "models"))]
    assert events[-1].status is DownloadStatus.ERROR
    assert events[-1].error_code == "checksum_mismatch", events[-1].message
    assert not (tmp_path / "models" / "manifests").exists()
    assert not final.exists()
    leftovers = [p for p in (tmp_path / "models").rglob("*") if weights.split(":")[1] in p.name]
    assert all(p.name.endswith(".lock") for p in leftovers), leftovers

    front.corrupt.clear()  # the registry heals: the next pull succeeds from scratch
    events = [e async for e in download_model("ollama-registry", name, insecure=True,
                                               models_dir=str(tmp_path / "models"))]
    assert events[-1].status is DownloadStatus.COMPLETE
    assert hashlib.sha256(final.read_bytes()).hexdigest() == weights.split(":")[1]
    assert os.path.exists(events[-1].path)
