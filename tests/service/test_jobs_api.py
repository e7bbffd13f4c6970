"""Download jobs over HTTP: start, join, watch (SSE with replay, NDJSON), cancel, expire.

Every test runs the real app under uvicorn on loopback and downloads from the
real test servers (olah behind hf_front, the Ollama emulator).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from .conftest import PROGRESS_FIELDS, read_ndjson, read_sse, wait_for, wait_job

MB = 1_000_000


def _weights(size: int, seed: str = "w") -> bytes:
    block = (seed * 64).encode()[:64]
    return (block * (size // len(block) + 1))[:size]


def _make_repo(olah: Any, repo_id: str, size: int = 300_000) -> dict[str, bytes]:
    files = {"config.json": b'{"model_type": "llama"}', "model.safetensors": _weights(size, repo_id)}
    olah.make_repo(repo_id, files)
    return files


def test_download_job_streams_progress_to_complete(service, olah, repo_id):
    files = _make_repo(olah, repo_id, 400_000)
    with service.client() as client:
        created = client.post("/downloads", json={"provider": "huggingface", "model": repo_id})
        assert created.status_code == 201, created.text
        body = created.json()
        job_id = body["id"]
        assert body["joined"] is False
        assert created.headers["location"] == f"/api/models/downloads/{job_id}"
        response, events = read_sse(client, "GET", f"/downloads/{job_id}/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    data = [e["data"] for e in events]
    assert data[0]["status"] == "starting"
    assert data[-1]["status"] == "complete", data[-1]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    for event in data:
        assert set(PROGRESS_FIELDS) <= set(event)
        assert event["job_id"] == job_id
    total = sum(len(b) for b in files.values())
    assert data[-1]["total_bytes"] == data[-1]["downloaded_bytes"] == total
    snapshot = Path(data[-1]["path"])
    assert snapshot.is_relative_to(service.dirs["hf"])
    assert (snapshot / "model.safetensors").read_bytes() == files["model.safetensors"]
    with service.client() as client:
        view = client.get(f"/downloads/{job_id}").json()
        listing = client.get("/downloads").json()["jobs"]
    assert view["state"] == "complete" and view["progress"]["status"] == "complete"
    assert view["last_event_id"] == len(events)
    assert [j["id"] for j in listing] == [job_id]


def test_identical_requests_join_one_job_and_download_once(service, olah, hf_front, repo_id):
    _make_repo(olah, repo_id, 600_000)
    hf_front.throttle(400_000, repo_id=repo_id, path="model.safetensors")
    request = {"provider": "hf", "model": repo_id, "token": "tok-aaaa-1111"}
    with service.client() as client:
        first = client.post("/downloads", json=request)
        second = client.post("/downloads", json={**request, "provider": "huggingface"})
        other_token = client.post("/downloads", json={**request, "token": "tok-bbbb-2222"})
        assert first.status_code == 201 and second.status_code == 200
        assert second.json() == {**second.json(), "id": first.json()["id"], "joined": True}
        # Another token is another identity (it may be allowed to see other files).
        assert other_token.status_code == 201 and other_token.json()["id"] != first.json()["id"]
        assert client.delete(f"/downloads/{other_token.json()['id']}").json()["state"] == "cancelled"
        assert wait_job(client, first.json()["id"])["state"] == "complete"
        assert client.get(f"/downloads/{first.json()['id']}").json()["joins"] == 1
    hf_front.wait_idle()
    # The joined request moved no byte of its own.
    gets = [r for r in hf_front.requests(method="GET", file_path="model.safetensors") if r.repo_id == repo_id]
    assert len(gets) == 1, [(r.range, r.bytes_sent) for r in gets]


def test_last_event_id_replays_what_a_reconnecting_client_missed(service, olah, hf_front, repo_id):
    _make_repo(olah, repo_id, 1_200_000)
    hf_front.throttle(600_000, repo_id=repo_id, path="model.safetensors")
    with service.client() as client:
        job_id = client.post("/downloads", json={"provider": "huggingface", "model": repo_id}).json()["id"]
        _, early = read_sse(client, "GET", f"/downloads/{job_id}/events", stop_after=3)
        assert [e["id"] for e in early] == [1, 2, 3]
        time.sleep(0.8)  # the client is away; the job goes on without watchers
        _, rest = read_sse(client, "GET", f"/downloads/{job_id}/events", headers={"Last-Event-ID": "3"})
        # After the end, a reconnect with the last id gets 204: EventSource stops retrying.
        after_end = client.get(f"/downloads/{job_id}/events", headers={"Last-Event-ID": str(rest[-1]["id"])})
        everything = read_ndjson(client, f"/downloads/{job_id}/events?format=ndjson")
    assert [e["id"] for e in rest] == list(range(4, 4 + len(rest)))
    assert rest[-1]["data"]["status"] == "complete"
    assert after_end.status_code == 204
    assert [e["data"] for e in early + rest] == everything
    downloaded = [e["downloaded_bytes"] for e in everything]
    assert downloaded == sorted(downloaded)


def test_many_watchers_see_the_same_events(service, olah, hf_front, repo_id):
    _make_repo(olah, repo_id, 800_000)
    hf_front.throttle(800_000, repo_id=repo_id, path="model.safetensors")
    results: dict[str, list[dict[str, Any]]] = {}

    with service.client() as client:
        job_id = client.post("/downloads", json={"provider": "huggingface", "model": repo_id}).json()["id"]

        def watch(name: str, ndjson: bool) -> None:
            with service.client() as own:
                if ndjson:
                    results[name] = read_ndjson(own, f"/downloads/{job_id}/events",
                                                headers={"Accept": "application/x-ndjson"})
                else:
                    results[name] = [e["data"] for e in read_sse(own, "GET", f"/downloads/{job_id}/events")[1]]

        threads = [threading.Thread(target=watch, args=(f"w{i}", i % 2 == 0)) for i in range(6)]
        for t in threads:
            t.start()
        wait_for(lambda: client.get(f"/downloads/{job_id}").json()["watchers"] >= 1)
        for t in threads:
            t.join(30)
    streams = list(results.values())
    assert len(streams) == 6
    assert all(s == streams[0] for s in streams)
    assert streams[0][-1]["status"] == "complete"


def test_cancel_stops_the_transfer_and_keeps_partial_data_for_resume(service, olah, hf_front, repo_id):
    files = _make_repo(olah, repo_id, 3 * MB)
    rule = hf_front.throttle(500_000, repo_id=repo_id, path="model.safetensors")
    with service.client() as client:
        job_id = client.post("/downloads", json={"provider": "huggingface", "model": repo_id}).json()["id"]
        wait_for(lambda: (client.get(f"/downloads/{job_id}").json()["progress"] or {}).get("downloaded_bytes", 0) > 300_000)
        cancelled = client.delete(f"/downloads/{job_id}")
        assert cancelled.status_code == 200
        view = cancelled.json()
        assert view["state"] == "cancelled"
        assert view["progress"]["error_code"] == "cancelled"
        assert "resume" in view["progress"]["message"]
        hf_front.wait_idle()
        sent = hf_front.file_bytes_sent(repo_id, "model.safetensors")
        time.sleep(0.6)
        assert hf_front.file_bytes_sent(repo_id, "model.safetensors") == sent, "bytes kept flowing after cancel"
        partials = list(service.dirs["hf"].glob("models--*/blobs/*.incomplete"))
        assert partials and partials[0].stat().st_size > 0
        kept = partials[0].stat().st_size
        events = read_ndjson(client, f"/downloads/{job_id}/events?format=ndjson")
        assert events[-1]["status"] == "error" and events[-1]["error_code"] == "cancelled"

        hf_front.remove_rule(rule)
        again = client.post("/downloads", json={"provider": "huggingface", "model": repo_id}).json()
        assert again["id"] != job_id and again["joined"] is False
        done = wait_job(client, again["id"])
    assert done["state"] == "complete"
    path = Path(done["progress"]["path"]) / "model.safetensors"
    assert path.read_bytes() == files["model.safetensors"]
    ranged = [r.range for r in hf_front.requests(method="GET", file_path="model.safetensors")
              if r.repo_id == repo_id and r.range]
    assert any(not r.startswith("bytes=0-") for r in ranged), f"no resume: {ranged} (kept {kept})"


def test_cancelling_an_ollama_pull_closes_the_server_stream(service, ollama_emulator):
    ollama_emulator.add_model("slowpoke:1b", [4 * MB, 200], bytes_per_sec=1 * MB)
    with service.client() as client:
        job_id = client.post("/downloads", json={"provider": "ollama", "model": "slowpoke:1b"}).json()["id"]
        wait_for(lambda: (client.get(f"/downloads/{job_id}").json()["progress"] or {}).get("downloaded_bytes", 0) > 0)
        assert client.delete(f"/downloads/{job_id}").json()["state"] == "cancelled"
    ollama_emulator.assert_no_progress_after_disconnect()


def test_ollama_job_completes_with_summed_layer_progress(service, ollama_emulator):
    ollama_emulator.add_model("tiny:1b", [800_000, 1_000, 100], bytes_per_sec=2 * MB)
    with service.client() as client:
        job_id = client.post("/downloads", json={"provider": "ollama", "model": "tiny:1b"}).json()["id"]
        events = read_ndjson(client, f"/downloads/{job_id}/events?format=ndjson")
    assert events[-1]["status"] == "complete"
    assert events[-1]["total_bytes"] == 801_100
    assert ollama_emulator.is_pulled("tiny:1b")


def test_pull_endpoint_streams_sse_at_once(service, ollama_emulator):
    ollama_emulator.add_model("legacy:2b", [300_000, 100], bytes_per_sec=2 * MB)
    with service.client() as client:
        response, events = read_sse(client, "POST", "/pull", json={"provider": "ollama", "model": "legacy:2b"})
        job_id = response.headers["x-download-id"]
        assert client.get(f"/downloads/{job_id}").json()["state"] == "complete"
        # A model the server does not know: the stream itself carries the error.
        _, failed = read_sse(client, "POST", "/pull", json={"provider": "ollama", "model": "missing:1b"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    data = [e["data"] for e in events]
    for event in data:
        for name in ("status", "message", "percent", "downloaded_bytes", "total_bytes", "error_code"):
            assert name in event
    assert data[0]["status"] == "starting" and data[-1]["status"] == "complete"
    assert data[-1]["percent"] == 100
    assert failed[-1]["data"]["status"] == "error"
    assert failed[-1]["data"]["error_code"] == "not_found"


def test_error_text_with_newlines_cannot_break_the_stream(service, ollama_emulator):
    ollama_emulator.add_model("broken:1b", [500_000, 100], bytes_per_sec=2 * MB)
    evil = "disk exploded\n\ndata: {\"status\": \"complete\"}\nid: 999\n"
    ollama_emulator.fail_after("broken:1b", 100_000, error=evil)
    with service.client() as client:
        _, events = read_sse(client, "POST", "/pull", json={"provider": "ollama", "model": "broken:1b"})
    last = events[-1]
    assert last["data"]["status"] == "error"
    assert evil.strip() in last["data"]["message"]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert sum(1 for e in events if e["data"]["status"] == "complete") == 0


def test_unknown_model_ends_the_job_with_not_found(service, hf_front):
    with service.client() as client:
        job_id = client.post("/downloads", json={"provider": "huggingface", "model": "nobody/nothing-here"}).json()["id"]
        view = wait_job(client, job_id)
    assert view["state"] == "error"
    assert view["progress"]["error_code"] == "not_found"
    assert "nobody/nothing-here" in view["progress"]["message"]


def test_finished_jobs_stay_listed_for_a_while_then_go(start_service, ollama_emulator):
    service = start_service(ollama_url=ollama_emulator.base_url, keep_finished=1.0)
    ollama_emulator.add_model("brief:1b", [10_000], bytes_per_sec=10 * MB)
    with service.client() as client:
        job_id = client.post("/downloads", json={"provider": "ollama", "model": "brief:1b"}).json()["id"]
        assert wait_job(client, job_id)["state"] == "complete"
        assert client.get(f"/downloads/{job_id}").status_code == 200
        time.sleep(1.3)
        gone = client.get(f"/downloads/{job_id}")
        assert gone.status_code == 404 and gone.json()["error_code"] == "job_not_found"
        assert client.get("/downloads").json()["jobs"] == []


def test_forgetting_a_finished_job(service, ollama_emulator):
    ollama_emulator.add_model("forget:1b", [10_000], bytes_per_sec=10 * MB)
    with service.client() as client:
        job_id = client.post("/downloads", json={"provider": "ollama", "model": "forget:1b"}).json()["id"]
        wait_job(client, job_id)
        assert client.delete(f"/downloads/{job_id}").json() == {"id": job_id, "removed": True}
        assert client.get(f"/downloads/{job_id}").status_code == 404


def test_all_jobs_feed_starts_with_every_job_then_follows_changes(service, ollama_emulator):
    ollama_emulator.add_model("feed-a:1b", [10_000], bytes_per_sec=10 * MB)
    ollama_emulator.add_model("feed-b:1b", [600_000], bytes_per_sec=1 * MB)
    with service.client() as client:
        a = client.post("/downloads", json={"provider": "ollama", "model": "feed-a:1b"}).json()["id"]
        wait_job(client, a)
        messages: list[dict[str, Any]] = []
        b = None
        with client.stream("GET", "/events?format=ndjson") as response:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                messages.append(json.loads(line))
                if b is None:
                    b = client.post("/downloads", json={"provider": "ollama", "model": "feed-b:1b"}).json()["id"]
                last = messages[-1]
                if last["type"] == "job" and last["job"]["id"] == b and last["job"]["state"] != "running":
                    break
    assert messages[0] == {"type": "job", "job": messages[0]["job"]} and messages[0]["job"]["id"] == a
    b_states = [m["job"]["progress"] for m in messages if m["type"] == "job" and m["job"]["id"] == b]
    assert b_states[-1]["status"] == "complete"
    assert len(b_states) >= 3  # live updates, not just the end


def test_event_list_is_bounded_and_coalesced(ollama_emulator):
    import asyncio

    from modelpull.service import JobManager, JobRequest

    ollama_emulator.add_model("chatty:1b", [1_500_000, 100], bytes_per_sec=1_000_000)

    async def run() -> list[dict[str, Any]]:
        manager = JobManager(max_events=10)
        job, _ = manager.start(JobRequest("ollama", "chatty:1b", ollama_emulator.base_url))
        await job.wait()
        return [e.data for e in job.events_after(0)]

    events = asyncio.run(run())
    assert len(events) == 10
    assert events[0]["status"] == "starting" and events[0]["seq"] == 1
    assert events[-1]["status"] == "complete" and events[-1]["seq"] > 10
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    # the newest progress is kept; the oldest went first
    assert seqs[1:] == list(range(seqs[-1] - 8, seqs[-1] + 1))

