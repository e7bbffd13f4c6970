"""Stopping the service while pages watch it: every event stream ends cleanly, at once.

A page keeps two streams open (the job list's ``/events`` and a job's
``/downloads/{id}/events``) and neither ends by itself while a job runs.
uvicorn waits for open connections before the app's shutdown; unless the
service ends its streams first, each stop waits out the grace time and then
cuts the streams mid-chunk, which a client reads as a broken response.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import httpx

from .conftest import wait_for

MB = 1_000_000


def _read_to_the_end(url: str, results: dict[str, str], name: str) -> None:
    try:
        with httpx.Client(timeout=30) as client, client.stream("GET", url) as response:
            assert response.status_code == 200
            results[name] = "open"
            for _ in response.iter_bytes():
                pass
        results[name] = "ended"
    except httpx.HTTPError as exc:
        results[name] = f"broken: {exc!r}"


def test_stopping_the_service_ends_every_event_stream_cleanly(start_service, olah, hf_front, repo_id):
    olah.make_repo(repo_id, {"config.json": b"{}", "model.safetensors": os.urandom(2 * MB)})
    hf_front.throttle(200_000, repo_id=repo_id, path="model.safetensors")
    service = start_service(hf_endpoint=hf_front.endpoint)
    with service.client() as client:
        job: dict[str, Any] = client.post("/downloads", json={"provider": "hf", "model": repo_id}).json()
        wait_for(lambda: (client.get(f"/downloads/{job['id']}").json()["progress"] or {}).get("downloaded_bytes"))
    results: dict[str, str] = {}
    readers = [
        threading.Thread(target=_read_to_the_end, args=(f"{service.api}/events", results, "all jobs")),
        threading.Thread(target=_read_to_the_end,
                         args=(f"{service.api}/downloads/{job['id']}/events", results, "the job")),
    ]
    for reader in readers:
        reader.start()
    wait_for(lambda: len(results) == 2)
    assert set(results.values()) == {"open"}, results  # both streams are live while the job runs

    service.stop()
    for reader in readers:
        reader.join(30)
    assert results == {"all jobs": "ended", "the job": "ended"}, results
