"""Pause and resume over HTTP: the partial is kept, the source is asked only for what is missing,
one numbering of events across runs, retry of cancelled and failed jobs under their id, and the
answers each state gives.

Real app under uvicorn on loopback, real olah behind hf_front.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from .conftest import read_ndjson, read_sse, wait_for, wait_job

MB = 1_000_000


def _weights(size: int, seed: str) -> bytes:
    block = (seed * 64).encode()[:64]
    return (block * (size // len(block) + 1))[:size]


def _make_repo(olah: Any, repo_id: str, size: int) -> dict[str, bytes]:
    files = {"config.json": b'{"model_type": "llama"}', "model.safetensors": _weights(size, repo_id)}
    olah.make_repo(repo_id, files)
    return files


def _downloaded(client: httpx.Client, job_id: str) -> int:
    return int((client.get(f"/downloads/{job_id}").json()["progress"] or {}).get("downloaded_bytes") or 0)


def runs_of(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Events split into runs: each run opens with STARTING (an interrupted run's tail may precede it)."""
    runs: list[list[dict[str, Any]]] = []
    for event in events:
        if event["status"] == "starting" or not runs:
            runs.append([])
        runs[-1].append(event)
    return runs


def assert_one_terminal_event_per_run(events: list[dict[str, Any]]) -> None:
    for run in runs_of(events):
        terminal = [e for e in run if e["status"] in ("complete", "error")]
        assert len(terminal) == 1 and run[-1] is terminal[0], [(e["seq"], e["status"]) for e in run]


def post(client: httpx.Client, path: str, body: Any = None) -> httpx.Response:
    return client.post(path, json={} if body is None else body)


def test_pause_keeps_the_partial_and_resume_asks_only_for_what_is_missing(service, olah, hf_front, repo_id):
    size = 3 * MB
    files = _make_repo(olah, repo_id, size)
    rule = hf_front.throttle(600_000, repo_id=repo_id, path="model.safetensors")
    with service.client() as client:
        job_id = post(client, "/downloads", {"provider": "huggingface", "model": repo_id}).json()["id"]
        view = client.get(f"/downloads/{job_id}").json()
        assert view["actions"] == ["pause", "cancel"] and view["runs"] == 1 and view["needs_token"] is False
        wait_for(lambda: _downloaded(client, job_id) > 600_000)

        # a live stream opened before the pause ends with the run's one terminal event
        paused = post(client, f"/downloads/{job_id}/pause")
        assert paused.status_code == 200, paused.text
        view = paused.json()
        assert view["id"] == job_id and view["state"] == "paused"
        assert view["actions"] == ["resume", "remove"] and view["finished_at"] is None
        assert view["progress"]["status"] == "error" and view["progress"]["error_code"] == "paused"
        assert "paused" in view["progress"]["message"] and "resum" in view["progress"]["message"]
        hf_front.wait_idle()
        sent = hf_front.file_bytes_sent(repo_id, "model.safetensors")
        time.sleep(0.6)
        assert hf_front.file_bytes_sent(repo_id, "model.safetensors") == sent, "bytes kept flowing after pause"
        partials = list(service.dirs["hf"].glob("models--*/blobs/*.incomplete"))
        assert partials, "the partial is kept"
        first_run = read_ndjson(client, f"/downloads/{job_id}/events?format=ndjson")  # ends: the job is paused
        paused_seq = view["last_event_id"]
        assert first_run[-1]["seq"] == paused_seq and first_run[-1]["error_code"] == "paused"
        # EventSource reconnecting with the last id it saw: 204, it stops retrying while the job is paused
        again = client.get(f"/downloads/{job_id}/events", headers={"Last-Event-ID": str(paused_seq)})
        assert again.status_code == 204
        # pausing a paused job changes nothing
        assert post(client, f"/downloads/{job_id}/pause").json()["last_event_id"] == paused_seq

        hf_front.remove_rule(rule)
        resumed = post(client, f"/downloads/{job_id}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["state"] == "running" and resumed.json()["runs"] == 2
        assert resumed.json()["id"] == job_id
        # the client that saw the pause reconnects with its last id and gets the new run from its start
        _, rest = read_sse(client, "GET", f"/downloads/{job_id}/events", headers={"Last-Event-ID": str(paused_seq)})
        done = wait_job(client, job_id)
        everything = read_ndjson(client, f"/downloads/{job_id}/events?format=ndjson")

    assert done["state"] == "complete" and done["runs"] == 2 and done["actions"] == ["remove"]
    assert [e["id"] for e in rest] == list(range(paused_seq + 1, paused_seq + 1 + len(rest)))
    assert rest[0]["data"]["status"] == "starting" and rest[-1]["data"]["status"] == "complete"
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    assert {e["job_id"] for e in everything} == {job_id}
    assert [len(r) > 0 for r in runs_of(everything)] == [True, True]
    assert_one_terminal_event_per_run(everything)
    second_start = runs_of(everything)[1][0]
    assert second_start["downloaded_bytes"] > size // 10  # the plan found the partial
    path = Path(done["progress"]["path"]) / "model.safetensors"
    assert path.read_bytes() == files["model.safetensors"]
    hf_front.wait_idle()
    gets = [r for r in hf_front.requests(method="GET", file_path="model.safetensors") if r.repo_id == repo_id]
    assert len(gets) == 2, [(r.range, r.bytes_sent) for r in gets]
    assert gets[1].range and not gets[1].range.startswith("bytes=0-"), gets[1].range
    refetched = hf_front.file_bytes_sent(repo_id, "model.safetensors") - size
    assert 0 <= refetched < size // 10, f"{refetched} bytes fetched twice"


def test_resume_retries_a_failed_or_cancelled_job_under_its_id(service, olah, hf_front, repo_id):
    with service.client() as client:
        # failed: the repo does not exist yet
        failed = post(client, "/downloads", {"provider": "huggingface", "model": repo_id}).json()["id"]
        view = wait_job(client, failed)
        assert view["state"] == "error" and view["progress"]["error_code"] == "not_found"
        assert view["actions"] == ["retry", "remove"] and view["finished_at"] is not None
        files = _make_repo(olah, repo_id, 200_000)
        retried = post(client, f"/downloads/{failed}/resume")
        assert retried.status_code == 200, retried.text
        assert retried.json()["finished_at"] is None
        view = wait_job(client, failed)
        assert view["state"] == "complete" and view["runs"] == 2, view
        events = read_ndjson(client, f"/downloads/{failed}/events?format=ndjson")
        assert [e["status"] for e in events][:1] == ["starting"]
        assert [e["error_code"] for e in events if e["status"] == "error"] == ["not_found"]
        assert_one_terminal_event_per_run(events)
        assert (Path(view["progress"]["path"]) / "model.safetensors").read_bytes() == files["model.safetensors"]

        # cancelled, then retried: it continues from the partial
        other = repo_id + "-c"
        size = 2 * MB
        _make_repo(olah, other, size)
        rule = hf_front.throttle(250_000, repo_id=other, path="model.safetensors")
        cancelled = post(client, "/downloads", {"provider": "huggingface", "model": other}).json()["id"]
        wait_for(lambda: _downloaded(client, cancelled) > 300_000)
        view = client.delete(f"/downloads/{cancelled}").json()
        assert view["state"] == "cancelled" and view["actions"] == ["retry", "remove"]
        hf_front.wait_idle()
        hf_front.remove_rule(rule)
        first_run = len(hf_front.log)
        assert post(client, f"/downloads/{cancelled}/resume").json()["state"] == "running"
        view = wait_job(client, cancelled)
        events = read_ndjson(client, f"/downloads/{cancelled}/events?format=ndjson")
    assert view["state"] == "complete" and view["runs"] == 2
    # the second run's plan found the partial, and nothing it asked for starts at byte 0 (on a
    # loaded machine the first run may even have had every byte before the cancel: then no GET)
    second_start = runs_of(events)[1][0]
    assert second_start["downloaded_bytes"] > 300_000, second_start
    again = [r for r in hf_front.log[first_run:]
             if r.repo_id == other and r.file_path == "model.safetensors" and r.method == "GET"]
    assert all(r.range and not r.range.startswith("bytes=0-") for r in again), [r.range for r in again]
    refetched = hf_front.file_bytes_sent(other, "model.safetensors") - size
    assert refetched < size // 10, f"{refetched} bytes fetched twice"


def test_a_paused_job_with_a_token_resumes_with_the_token_it_was_given(service, olah, hf_front, repo_id):
    token = "hf_pause" + "Xy7Qw3rT"
    files = _make_repo(olah, repo_id, 2 * MB)
    hf_front.require_token(token, repo_id=repo_id)
    rule = hf_front.throttle(500_000, repo_id=repo_id, path="model.safetensors")
    with service.client() as client:
        job_id = post(client, "/downloads", {"provider": "huggingface", "model": repo_id, "token": token}).json()["id"]
        wait_for(lambda: _downloaded(client, job_id) > 200_000)
        view = post(client, f"/downloads/{job_id}/pause").json()
        assert view["state"] == "paused" and view["has_token"] is True
        assert view["needs_token"] is False  # this service still holds it (in memory only)
        hf_front.remove_rule(rule)
        assert post(client, f"/downloads/{job_id}/resume").status_code == 200
        view = wait_job(client, job_id)
        assert view["state"] == "complete", view
        # a retry may bring a new token: a job that failed for want of one
        other = repo_id + "-t"
        _make_repo(olah, other, 50_000)
        hf_front.require_token(token, repo_id=other)
        failed = post(client, "/downloads", {"provider": "huggingface", "model": other}).json()["id"]
        assert wait_job(client, failed)["state"] == "error"
        retried = post(client, f"/downloads/{failed}/resume", {"token": token})
        assert retried.json()["has_token"] is True
        assert wait_job(client, failed)["state"] == "complete"
        texts = [client.get("/downloads").text, read_ndjson(client, f"/downloads/{failed}/events?format=ndjson")]
    assert (Path(view["progress"]["path"]) / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert token not in repr(texts) and token not in service.log_text()


def test_what_pause_resume_and_delete_answer_in_each_state(service, olah, hf_front, repo_id):
    _make_repo(olah, repo_id, 1 * MB)
    rule = hf_front.throttle(200_000, repo_id=repo_id, path="model.safetensors")
    with service.client() as client:
        job_id = post(client, "/downloads", {"provider": "huggingface", "model": repo_id}).json()["id"]
        # resume of a running job: nothing happens
        running = post(client, f"/downloads/{job_id}/resume")
        assert running.status_code == 200 and running.json()["runs"] == 1
        # bodies: JSON only (no cross-site form can post one), no unknown fields, tokens only in the body
        plain = client.post(f"/downloads/{job_id}/pause", content=b"", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415
        bare = client.post(f"/downloads/{job_id}/pause")
        assert bare.status_code == 415
        assert post(client, f"/downloads/{job_id}/pause", {"now": True}).status_code == 422
        assert post(client, f"/downloads/{job_id}/resume", {"token": 5}).status_code == 422
        assert post(client, f"/downloads/{job_id}/resume", {"tokn": "x"}).status_code == 422
        in_url = client.post(f"/downloads/{job_id}/resume?token=abcd1234", json={})
        assert in_url.status_code == 400 and in_url.json()["error_code"] == "secret_in_url"
        missing = post(client, "/downloads/0123456789abcdef/pause")
        assert missing.status_code == 404 and missing.json()["error_code"] == "job_not_found"
        assert client.get(f"/downloads/{job_id}").json()["state"] == "running"

        # an empty body with the JSON type is fine
        paused = client.post(f"/downloads/{job_id}/pause", content=b"", headers={"Content-Type": "application/json"})
        assert paused.status_code == 200 and paused.json()["state"] == "paused"
        # while it is paused, the same download asked again is a new job; resuming the paused one then conflicts
        twin = post(client, "/downloads", {"provider": "huggingface", "model": repo_id})
        assert twin.status_code == 201
        conflict = post(client, f"/downloads/{job_id}/resume")
        assert conflict.status_code == 409 and conflict.json()["error_code"] == "download_running"
        assert twin.json()["id"] in conflict.json()["message"]
        hf_front.remove_rule(rule)
        done = wait_job(client, twin.json()["id"])
        assert done["state"] == "complete"
        assert post(client, f"/downloads/{twin.json()['id']}/pause").json()["error_code"] == "not_running"
        complete = post(client, f"/downloads/{twin.json()['id']}/resume")
        assert complete.status_code == 409 and complete.json()["error_code"] == "already_complete"
        # DELETE forgets a paused job (its partial, if any, stays on disk)
        assert client.delete(f"/downloads/{job_id}").json() == {"id": job_id, "removed": True}
        assert client.get(f"/downloads/{job_id}").status_code == 404


def test_pause_and_resume_need_the_api_key(start_service, ollama_emulator):
    service = start_service(api_key="pause-test-key", ollama_url=ollama_emulator.base_url)
    ollama_emulator.add_model("keyed-pause:1b", [3 * MB, 100], bytes_per_sec=500_000)
    with service.client() as client, httpx.Client(base_url=service.api, timeout=30) as anonymous:
        job_id = post(client, "/downloads", {"provider": "ollama", "model": "keyed-pause:1b"}).json()["id"]
        for action in ("pause", "resume"):
            refused = post(anonymous, f"/downloads/{job_id}/{action}")
            assert refused.status_code == 401 and refused.json()["error_code"] == "unauthorized"
        assert client.get(f"/downloads/{job_id}").json()["state"] == "running"
        wait_for(lambda: _downloaded(client, job_id) > 0)
        assert post(client, f"/downloads/{job_id}/pause").json()["state"] == "paused"
        ollama_emulator.assert_no_progress_after_disconnect()
        assert post(client, f"/downloads/{job_id}/resume").json()["state"] == "running"
        view = wait_job(client, job_id)
    assert view["state"] == "complete" and view["runs"] == 2
    assert ollama_emulator.is_pulled("keyed-pause:1b")
