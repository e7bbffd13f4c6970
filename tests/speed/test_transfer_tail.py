"""No stuck-at-99 %: the rest of a part on a lagging connection goes to another one.

One response of a blob is sent at a twentieth of the others' speed (the fault
proxy's throttle, once); a Hub file stalls half-way. The engine must take the
rest of that range over on another connection - the proxy sees a request that
starts inside the slow range, the slow response is dropped before its end - and
still write every byte exactly once (``strace`` of the writes) and publish the
right digest.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from modelpull import DownloadStatus
from tests.servers.registry import DockerRegistry
from tests.speed.conftest import collect, traced_writes, written_once

WEIGHTS = 8_000_000
PART = 1_000_000
FAST_RATE = 4_000_000  # bytes/s of every blob response
SLOW_RATE = FAST_RATE / 20  # the one slow response


def _start(range_header: str | None) -> int:
    match = re.match(r"bytes=(\d+)-", range_header or "")
    assert match, range_header
    return int(match.group(1))


def test_the_rest_of_a_slow_connections_range_is_taken_over_and_written_once(
    registry: DockerRegistry, make_proxy, tmp_path: Path
) -> None:
    model = registry.push_tiny(weights=WEIGHTS)
    weights = model.layer_digests[0]
    proxy = make_proxy(registry.url)
    blob = f"/v2/{model.repo}/blobs/{weights}"
    proxy.throttle(FAST_RATE, path=blob)
    proxy.throttle(SLOW_RATE, path=blob, times=1)  # the first answer crawls

    writes, last = traced_writes(
        "ollama-registry", f"{proxy.netloc}/{model.repo}:{model.tag}", insecure=True,
        models_dir=str(tmp_path / "models"), part_size=PART,
    )

    assert last["status"] == "complete", last
    stored = tmp_path / "models" / "blobs" / f"sha256-{weights.split(':')[1]}"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == weights.split(":")[1]
    written_once(writes, weights.split(":")[1] + ".partial", WEIGHTS)

    proxy.wait_idle()
    answers = proxy.requests(blob, method="GET")
    slow = [e for e in answers if f"throttle:{int(SLOW_RATE)}" in e.faults]
    assert len(slow) == 1, [e.faults for e in answers]
    slow_start = _start(slow[0].range)
    slow_end = slow_start + PART
    # the slow answer was dropped before the end of its range...
    assert slow[0].bytes_sent < PART, slow[0]
    # ...and another connection asked for the rest of it
    takeovers = [e for e in answers if e is not slow[0] and slow_start < _start(e.range) < slow_end]
    assert takeovers, [e.range for e in answers]
    # nearly every byte crossed the wire once (the slow answer's bytes in flight at the cut aside)
    assert proxy.body_bytes(blob) < WEIGHTS + SLOW_RATE


async def test_a_stalled_file_at_the_end_of_a_snapshot_is_raced_from_where_it_stopped(
    olah, hf_front, tmp_path: Path
) -> None:
    repo = "speed/tail-snapshot"
    files = {f"shard-{i}.bin": bytes([i]) * 3_000_000 + hashlib.sha256(bytes([i])).digest() for i in range(4)}
    files["config.json"] = b'{"model_type": "llama"}'
    olah.make_repo(repo, files)
    hf_front.serve_lfs_from_disk()
    # one file stalls for a minute after its first 200 kB; the stall timeout is longer still,
    # so only taking the rest over on another connection ends the download early
    hf_front.stall(60.0, after_bytes=200_000, repo_id=repo, path="shard-2.bin", times=1)

    events = await collect("huggingface", repo, base_url=hf_front.endpoint,
                           cache_dir=str(tmp_path / "hf"), stall_timeout=120)

    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    snapshot = Path(events[-1].path or "")
    for name, data in files.items():
        assert (snapshot / name).read_bytes() == data, name
    hf_front.wait_idle()
    gets = [r for r in hf_front.requests(method="GET", file_path="shard-2.bin")]
    assert len(gets) == 2, [(r.range, r.bytes_sent) for r in gets]
    stalled, racer = sorted(gets, key=lambda r: r.started)
    assert (stalled.rule or "").startswith("stall") and stalled.client_disconnected, stalled
    # the racer starts where the stalled answer stopped: nothing fetched twice
    assert racer.range is not None and _start(racer.range) == stalled.bytes_sent, (racer.range, stalled)
