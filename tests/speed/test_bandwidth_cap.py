"""A bandwidth cap: one download's connections and files share it; a service's jobs share one.

Rates are measured over a few seconds from what the client reports (bytes
present against time), with generous bounds: the point is that the cap holds
and is shared, not the exact figure (``bench/bench_peers.py`` measures that).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelpull import DownloadStatus, download_model
from modelpull.errors import InvalidOption
from tests.servers.registry import DockerRegistry
from tests.service.conftest import start_service  # noqa: F401  (the fixture: the service, in a thread)

MB = 1_000_000


def rate_between(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Bytes/s between two moments, from (time, bytes) samples taken along the way."""
    inside = [(t, b) for t, b in samples if start <= t <= end]
    assert len(inside) >= 4, f"too few samples between {start:.2f} and {end:.2f}: {samples}"
    (t0, b0), (t1, b1) = inside[0], inside[-1]
    return (b1 - b0) / (t1 - t0)


async def test_one_download_stays_under_its_cap_over_every_connection_and_file(
    registry: DockerRegistry, tmp_path: Path
) -> None:
    model = registry.push_tiny(weights=14 * MB)
    cap = 4 * MB
    samples: list[tuple[float, int]] = []
    speeds: list[tuple[float, float | None, float | None, int]] = []
    started = time.monotonic()
    events = []
    async for event in download_model(
        "ollama-registry", f"{registry.host}/{model.repo}:{model.tag}", insecure=True,
        models_dir=str(tmp_path / "models"), part_size=MB, max_speed="4M",
    ):
        now = time.monotonic() - started
        events.append(event)
        if event.status is DownloadStatus.DOWNLOADING:
            samples.append((now, event.downloaded_bytes or 0))
            speeds.append((now, event.speed_bps, event.eta_seconds, event.downloaded_bytes or 0))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    # several connections ran (1 MB parts), yet together they kept to the cap
    measured = rate_between(samples, 0.5, samples[-1][0])
    assert 0.8 * cap <= measured <= 1.1 * cap, measured
    # and the progress said so: speed near the cap, an ETA that matches what was left
    steady = [(t, s, eta, done) for t, s, eta, done in speeds if t > 1.5 and s and eta is not None]
    assert steady, speeds
    for _, speed, eta, done in steady:
        assert 0.75 * cap <= speed <= 1.25 * cap, speed
        assert eta == pytest.approx((model.total_size - done) / speed, abs=1.0)


def test_a_rate_that_means_nothing_is_refused_before_any_network_call() -> None:
    from modelpull.api import check_download

    for bad in ("fast", "-5M", "12 parsecs", "100"):
        with pytest.raises(InvalidOption):
            check_download("ollama-registry", "gemma3:1b", max_speed=bad)
    assert check_download("ollama-registry", "gemma3:1b", max_speed="20M") == "ollama-registry"


def _poll(client: httpx.Client, ids: list[str], until: float, samples: list[tuple[float, int, list[int]]],
          started: float) -> None:
    while time.monotonic() - started < until:
        views = [client.get(f"/downloads/{job}").json() for job in ids]
        done = [int((v.get("progress") or {}).get("downloaded_bytes") or 0) for v in views]
        samples.append((time.monotonic() - started, sum(done), done))
        if all(v["state"] != "running" for v in views):
            return
        time.sleep(0.2)


def test_the_services_cap_is_shared_by_its_jobs_and_changes_while_they_run(
    registry: DockerRegistry, start_service: Any, tmp_path: Path  # noqa: F811 - the fixture
) -> None:
    service = start_service(max_speed="3M", ollama_models_dir=str(tmp_path / "ollama"))
    models = [registry.push_tiny(weights=16 * MB) for _ in range(2)]
    samples: list[tuple[float, int, list[int]]] = []
    with service.client() as client:
        assert client.get("/settings").json() == {"max_speed": 3 * MB}
        ids = []
        for model in models:
            answer = client.post("/downloads", json={
                "provider": "ollama-registry", "model": f"{registry.host}/{model.repo}:{model.tag}",
                "options": {"insecure": True, "part_size": MB},
            })
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["id"])
        started = time.monotonic()
        _poll(client, ids, 3.0, samples, started)
        changed = client.put("/settings", json={"max_speed": "6M"})
        assert changed.status_code == 200 and changed.json() == {"max_speed": 6 * MB}, changed.text
        at_change = time.monotonic() - started
        _poll(client, ids, 60.0, samples, started)
        views = [client.get(f"/downloads/{job}").json() for job in ids]
        assert [v["state"] for v in views] == ["complete", "complete"], views
        assert client.put("/settings", json={"max_speed": "fast"}).status_code == 400
        assert client.put("/settings", json={"speed": 1}).status_code == 422

    pairs = [(t, total) for t, total, _ in samples]
    before = rate_between(pairs, 0.8, at_change)
    assert 0.75 * 3 * MB <= before <= 1.15 * 3 * MB, before
    # both jobs moved while they shared the cap: neither starved
    both = [split for t, _, split in samples if t <= at_change]
    assert all(b > 1 * MB for b in both[-1]), both[-1]
    both_running = [t for t, _, split in samples if t > at_change and all(d < 16 * MB for d in split)]
    after = rate_between(pairs, at_change + 0.8, both_running[-1] if both_running else samples[-1][0])
    assert 0.75 * 6 * MB <= after <= 1.15 * 6 * MB, after
