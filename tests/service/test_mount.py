"""The router mounted in another FastAPI app in one line, and ``modelpull serve`` as a user runs it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from .conftest import free_port, read_sse, serve_process, wait_job


def test_router_mounts_in_another_app(olah, hf_front, repo_id):
    import modelpull.service

    app = FastAPI()

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"app": "host"}

    app.include_router(modelpull.service.router, prefix="/api/models")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        olah.make_repo(repo_id, {"config.json": b"{}", "model.safetensors": b"t" * 40_000})
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base + "/api/models", timeout=30) as client:
            _, events = read_sse(client, "POST", "/pull",
                                 json={"provider": "huggingface", "model": repo_id, "base_url": hf_front.endpoint})
            assert events[-1]["data"]["status"] == "complete", events[-1]
            assert Path(events[-1]["data"]["path"], "model.safetensors").stat().st_size == 40_000
            assert client.get("/downloads").json()["jobs"][0]["model"] == repo_id
        assert httpx.get(base + "/").json() == {"app": "host"}
        page = httpx.get(base + "/api/models/ui")
        assert 'src="/api/models/ui/app.js"' in page.text and 'data-api="/api/models"' in page.text
        assert httpx.get(base + "/api/models/ui/app.css").status_code == 200
    finally:
        server.should_exit = True
        thread.join(15)


def test_modelpull_serve_downloads_like_a_new_user_would(tmp_path, olah, hf_front, ollama_emulator, repo_id):
    olah.make_repo(repo_id, {"config.json": b"{}", "model.safetensors": b"u" * 60_000})
    ollama_emulator.add_model("hello:1b", [20_000, 100], bytes_per_sec=1e7)
    port = free_port()
    proc = serve_process(
        ["--port", str(port), "--cache-dir", str(tmp_path / "hf"), "--hf-endpoint", hf_front.endpoint,
         "--ollama-host", ollama_emulator.base_url],
        tmp_path / "serve.log",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(base + "/")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        assert page.status_code == 200 and "<title>modelpull</title>" in page.text
        with httpx.Client(base_url=base + "/api/models", timeout=30) as client:
            hf = client.post("/downloads", json={"provider": "huggingface", "model": repo_id}).json()["id"]
            ollama = client.post("/downloads", json={"provider": "ollama", "model": "hello:1b"}).json()["id"]
            assert wait_job(client, hf)["state"] == "complete"
            assert wait_job(client, ollama)["state"] == "complete"
            models = {(m["provider"], m["name"]) for m in client.get("/models").json()["models"]}
        assert {("huggingface", repo_id), ("ollama", "hello:1b")} <= models
        assert (tmp_path / "hf" / f"models--{repo_id.replace('/', '--')}").is_dir()
    finally:
        proc.terminate()
        proc.wait(15)  # stops on SIGTERM (uvicorn re-raises the signal once shut down)
    log = (tmp_path / "serve.log").read_text()
    assert "Application shutdown complete" in log
    assert "modelpull service on http://127.0.0.1:" in log and f"job {hf} complete" in log


def test_core_imports_and_serve_explains_without_the_service_extra():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "import modelpull, modelpull.inventory, modelpull.cli\n"
        "from click.testing import CliRunner\n"
        "result = CliRunner().invoke(modelpull.cli.main, ['serve'])\n"
        "print(result.exit_code, result.output)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("1 ") and "pip install 'modelpull[service]'" in run.stdout


def test_standalone_service_answers_at_the_root_too(service, olah, repo_id):
    """`modelpull serve` takes `POST /downloads` at its root as well as under /api/models."""
    olah.make_repo(repo_id, {"config.json": b"{}", "model.safetensors": b"\1" * 100_000})
    with httpx.Client(base_url=service.url, timeout=30) as client:
        started = client.post("/downloads", json={"provider": "huggingface", "model": repo_id})
        assert started.status_code == 201, started.text
        job_id = started.json()["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = client.get(f"/downloads/{job_id}").json()
            if job["state"] != "running":
                break
            time.sleep(0.1)
        assert job["state"] == "complete", job
        # one job list, whichever prefix asked
        listed = {j["id"] for j in client.get("/api/models/downloads").json()["jobs"]}
        assert job_id in listed
        assert client.get("/").headers["content-type"].startswith("text/html")
