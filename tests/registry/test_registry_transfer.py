"""How the engine moves one blob: parallel ranges where each connection is capped."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from modelpull import DownloadStatus, download_model
from tests.servers.registry import DockerRegistry, RegistryFront


async def test_a_per_connection_cap_makes_the_engine_open_more_connections(
    registry: DockerRegistry, front: RegistryFront, tmp_path: Path
) -> None:
    model = registry.push_tiny(weights=8_000_000)
    weights = model.layer_digests[0]
    front.rate = 2_000_000  # bytes/s per connection: far below "fast"
    events = [e async for e in download_model(
        "ollama-registry", f"{front.netloc}/{model.repo}:{model.tag}", insecure=True,
        models_dir=str(tmp_path / "models"), part_size=1_000_000,
    )]
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    ranges = [s.headers.get("Range", "") for s in front.blob_requests() if s.path.endswith(weights)]
    starts = {int(m.group(1)) for r in ranges if (m := re.match(r"bytes=(\d+)-", r))}
    assert len(starts) == 8  # one ranged request per 1 MB part
    assert front.max_concurrent_blobs >= 4  # several at once, not one after another
    assert front.served[weights] == 8_000_000  # and no byte fetched twice
    blob = tmp_path / "models" / "blobs" / f"sha256-{weights.split(':')[1]}"
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == weights.split(":")[1]
