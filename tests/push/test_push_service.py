"""The service runs a push as a job beside the downloads: same events, same controls, behind the API key."""

from __future__ import annotations

import json
import time

from modelpull import DownloadStatus
from tests.push.conftest import folder_files


def _wait(client, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/downloads/{job_id}").json()
        if job["state"] not in ("running",):
            return job
        time.sleep(0.1)
    raise AssertionError("the push job did not finish")


def test_push_job_behind_the_api_key(start_service, registry, ollama_model, tmp_path):
    service = start_service(api_key="k3y-for-push", allow_client_paths=True)
    body = {
        "provider": ollama_model.provider, "model": ollama_model.model,
        "destination": f"oci://{registry.host}/team/from-service:v1", "format": "docker",
        "options": {**ollama_model.options, "insecure": True, "state_dir": str(tmp_path / "state")},
    }
    with service.client() as client:
        anonymous = client.post("/pushes", json=body, headers={"Authorization": ""})
        assert anonymous.status_code == 401
        created = client.post("/pushes", json=body)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        job = _wait(client, job_id)
        assert job["state"] == "complete", job
        events = [json.loads(line) for line in client.get(
            f"/downloads/{job_id}/events", params={"format": "ndjson"}).text.splitlines()]
        statuses = [e["status"] for e in events]
        assert statuses[0] == DownloadStatus.STARTING.value and statuses[-1] == DownloadStatus.COMPLETE.value
        assert DownloadStatus.VERIFYING.value in statuses
        assert events[-1]["path"] == f"{registry.host}/team/from-service:v1"
        listed = {j["id"]: j for j in client.get("/downloads").json()["jobs"]}
        assert listed[job_id]["options"]["push_to"] == body["destination"]
        bad = client.post("/pushes", json={**body, "destination": "ftp://x"})
        assert bad.status_code == 400 and bad.json()["error_code"] == "invalid_model"

    back = tmp_path / "back"
    from modelpull import download_model
    from tests.push.conftest import run

    got = run(download_model("oci", f"{registry.host}/team/from-service:v1", insecure=True, local_dir=str(back)))
    assert got[-1].status is DownloadStatus.COMPLETE, got[-1].message
    assert folder_files(back) == ollama_model.files


def test_service_refuses_layout_destinations_unless_allowed(start_service, ollama_model, tmp_path):
    service = start_service()
    body = {"provider": ollama_model.provider, "model": ollama_model.model,
            "destination": f"oci-layout:{tmp_path / 'disk'}"}
    with service.client() as client:
        refused = client.post("/pushes", json=body)
    assert refused.status_code == 400 and refused.json()["error_code"] == "invalid_option"


def test_a_push_job_pauses_and_resumes_from_what_the_registry_holds(start_service, registry, front, big_ollama,
                                                                    tmp_path):
    service = start_service(allow_client_paths=True)
    body = {
        "provider": big_ollama.provider, "model": big_ollama.model,
        "destination": f"oci://{front.netloc}/team/paused:v1",
        "options": {**big_ollama.options, "insecure": True, "state_dir": str(tmp_path / "state"),
                    "max_speed": "40M", "chunk_size": 8 << 20},
    }
    weights = len(big_ollama.files["model.gguf"])
    with service.client() as client:
        job_id = client.post("/pushes", json=body).json()["id"]
        deadline = time.monotonic() + 30
        while (client.get(f"/downloads/{job_id}").json()["progress"] or {}).get("downloaded_bytes", 0) < weights // 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.post(f"/downloads/{job_id}/pause", json={}).status_code == 200
        paused = _wait(client, job_id)
        assert paused["state"] == "paused"
        assert paused["progress"]["message"].startswith("Push of") and paused["progress"]["error_code"] == "paused"
        first = front.uploaded["PATCH"]
        assert 0 < first < weights
        assert client.post(f"/downloads/{job_id}/resume", json={}).status_code == 200
        done = _wait(client, job_id, 120)
        assert done["state"] == "complete", done
    assert front.uploaded["PATCH"] - first < weights - first + 4096  # only the rest (and the config)
