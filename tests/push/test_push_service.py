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
