"""Input validation, API key, CORS, host checks, and tokens that never leak."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from .conftest import read_ndjson, read_sse, serve_process, wait_job


def _post_raw(client: httpx.Client, path: str, content: bytes, content_type: str = "application/json") -> httpx.Response:
    return client.post(path, content=content, headers={"Content-Type": content_type})


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"provider": "napster", "model": "x/y"}, 400, "unsupported_provider"),
        ({"provider": "huggingface", "model": "not a repo id"}, 400, "invalid_model"),
        ({"provider": "ollama", "model": "bad name!:x"}, 400, "invalid_model"),
        ({"provider": "huggingface", "model": "org/m", "options": {"colour": "red"}}, 400, "invalid_option"),
        ({"provider": "huggingface", "model": "org/m", "options": {"cache_dir": "/etc"}}, 400, "invalid_option"),
        ({"provider": "huggingface", "model": "org/m", "options": {"local_dir": "/tmp/x"}}, 400, "invalid_option"),
        ({"provider": "huggingface", "model": "org/m", "options": {"revision": {"a": 1}}}, 422, "invalid_request"),
        ({"provider": "huggingface", "model": "org/m", "options": {"token": "t"}}, 422, "invalid_request"),
        ({"provider": "huggingface", "model": "org/m", "base_url": "ftp://x"}, 400, "invalid_option"),
        ({"provider": "huggingface"}, 422, "invalid_request"),
        ({"model": "org/m"}, 422, "invalid_request"),
        ({"provider": "huggingface", "model": "org/m", "colour": "red"}, 422, "invalid_request"),
        ({"provider": "huggingface", "model": "org/m", "token": 42}, 422, "invalid_request"),
        (["huggingface", "org/m"], 422, "invalid_request"),
    ],
)
def test_bad_requests_get_clear_4xx(start_service, body, status, code):
    service = start_service()  # all of this is checked offline, before any job exists
    with service.client() as client:
        for path in ("/downloads", "/pull"):
            response = client.post(path, json=body)
            assert response.status_code == status, response.text
            assert response.json()["error_code"] == code
            assert response.json()["message"]
        assert client.get("/downloads").json()["jobs"] == []


def test_malformed_bodies(service):
    with service.client() as client:
        bad_json = _post_raw(client, "/downloads", b'{"provider": "hf", "model": ')
        assert bad_json.status_code == 400 and bad_json.json()["error_code"] == "invalid_json"
        not_utf8 = _post_raw(client, "/downloads", b'\xff\xfe{}')
        assert not_utf8.status_code == 400
        huge = json.dumps({"provider": "hf", "model": "org/m", "options": {"x": "a" * 70_000}}).encode()
        too_large = _post_raw(client, "/downloads", huge)
        assert too_large.status_code == 413 and too_large.json()["error_code"] == "body_too_large"

        def chunks():  # no Content-Length: the limit holds while reading
            for _ in range(40):
                yield b" " * 4096

        streamed = client.post("/downloads", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413
        form = _post_raw(client, "/downloads", b"provider=hf&model=org/m", "application/x-www-form-urlencoded")
        assert form.status_code == 415 and form.json()["error_code"] == "unsupported_media_type"
        plain = _post_raw(client, "/downloads", b'{"provider": "hf", "model": "org/m"}', "text/plain")
        assert plain.status_code == 415  # a cross-site "simple" request cannot start a download
        assert client.get("/downloads/nope").json()["error_code"] == "job_not_found"
        assert client.get("/downloads/nope/events").status_code == 404


def test_bad_last_event_id_and_format(service, ollama_emulator):
    ollama_emulator.add_model("lei:1b", [1000], bytes_per_sec=1e7)
    with service.client() as client:
        job_id = client.post("/downloads", json={"provider": "ollama", "model": "lei:1b"}).json()["id"]
        bad = client.get(f"/downloads/{job_id}/events", headers={"Last-Event-ID": "-1"})
        assert bad.status_code == 400
        assert client.get(f"/downloads/{job_id}/events?format=xml").status_code == 400


def test_tokens_in_the_url_are_refused(service):
    with service.client() as client:
        for query in ("token=abc", "api_key=abc", "access_token=abc"):
            response = client.get(f"/downloads?{query}")
            assert response.status_code == 400 and response.json()["error_code"] == "secret_in_url"


def test_api_key_guards_every_endpoint_but_the_page(start_service, ollama_emulator):
    key = "k3y-for-tests-only"
    service = start_service(api_key=key, ollama_url=ollama_emulator.base_url)
    ollama_emulator.add_model("keyed:1b", [1000], bytes_per_sec=1e7)
    with httpx.Client(base_url=service.api, timeout=10) as anonymous:
        for method, path in (("GET", "/providers"), ("GET", "/downloads"), ("POST", "/downloads"),
                             ("GET", "/events"), ("GET", "/models"), ("POST", "/pull"),
                             ("DELETE", "/models/huggingface/a/b"), ("GET", "/downloads/x/events")):
            response = anonymous.request(method, path, json={"provider": "ollama", "model": "keyed:1b"})
            assert response.status_code == 401, (method, path)
            assert response.json()["error_code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = anonymous.get("/downloads", headers={"Authorization": "Bearer nope-nope-nope"})
        assert wrong.status_code == 401
        assert anonymous.get("/downloads", headers={"Authorization": key}).status_code == 401
    assert httpx.get(service.url + "/").status_code == 200  # the page itself holds no data
    assert httpx.get(service.api + "/ui/app.js").status_code == 200
    with service.client() as client:
        job = client.post("/downloads", json={"provider": "ollama", "model": "keyed:1b"})
        assert job.status_code == 201
        assert read_ndjson(client, f"/downloads/{job.json()['id']}/events?format=ndjson")[-1]["status"] == "complete"


def test_non_loopback_bind_without_key_refuses_to_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "from modelpull.cli import main; main()", "serve", "--host", "0.0.0.0", "--port", "1"],
        check=False, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "API key" in result.stderr and "refusing" in result.stderr
    from modelpull.service import ConfigError, ServiceConfig, create_app

    with pytest.raises(ConfigError):
        create_app(ServiceConfig(host="192.0.2.1"))
    with pytest.raises(ConfigError):
        ServiceConfig(host="::", api_key="short").check()
    ServiceConfig(host="192.0.2.1", api_key="long-enough-key").check()


def test_cors_closed_unless_configured(start_service):
    closed = start_service()
    opened = start_service(cors_origins=["http://app.example"])
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    response = httpx.options(closed.api + "/downloads", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    simple = httpx.get(closed.api + "/downloads", headers={"Origin": "http://app.example"})
    assert "access-control-allow-origin" not in simple.headers
    allowed = httpx.options(opened.api + "/downloads", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"
    other = httpx.options(opened.api + "/downloads", headers={**preflight, "Origin": "http://evil.example"})
    assert other.headers.get("access-control-allow-origin") != "http://evil.example"


def test_foreign_host_header_is_refused(service):
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host.
    response = httpx.get(service.api + "/downloads", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert httpx.get(service.api + "/downloads", headers={"Host": "localhost:1234"}).status_code == 200


def test_page_is_locked_down(service):
    page = httpx.get(service.url + "/")
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert 'data-api="/api/models"' in page.text
    assert httpx.get(service.api + "/ui/../../etc/passwd").status_code == 404
    assert httpx.get(service.api + "/ui/secrets.txt").status_code == 404


def test_no_token_in_any_url_log_line_event_or_listing(tmp_path, olah, hf_front, ollama_emulator, repo_id):
    """The real ``modelpull serve`` process; a canary token used for real, then searched for everywhere."""
    from .conftest import free_port

    canary = "hf_CANARY" + "q7Zx93LmT0k"
    olah.make_repo(repo_id, {"config.json": b"{}", "model.safetensors": b"w" * 50_000})
    hf_front.require_token(canary, repo_id=repo_id)
    ollama_emulator.add_model("canary:1b", [5_000], bytes_per_sec=1e7)
    port = free_port()
    log_path = tmp_path / "serve.log"
    proc = serve_process(
        ["--port", str(port), "--cache-dir", str(tmp_path / "hf"), "--hf-endpoint", hf_front.endpoint,
         "--ollama-host", ollama_emulator.base_url, "--log-level", "debug"],
        log_path,
    )
    seen: list[str] = []
    try:
        api = f"http://127.0.0.1:{port}/api/models"
        with httpx.Client(base_url=api, timeout=30) as client:
            for _ in range(300):
                try:
                    if client.get("/providers").status_code == 200:
                        break
                except httpx.TransportError:
                    import time

                    time.sleep(0.1)
            good = client.post("/downloads", json={"provider": "huggingface", "model": repo_id, "token": canary})
            seen.append(good.text)
            job_id = good.json()["id"]
            seen.append(json.dumps(wait_job(client, job_id)))
            # a job that fails with the token in hand (the error path must not echo it)
            bad = client.post("/downloads", json={"provider": "huggingface", "model": "svc/absent-repo",
                                                  "token": canary})
            seen.append(json.dumps(wait_job(client, bad.json()["id"])))
            seen.append(json.dumps(read_sse(client, "POST", "/pull",
                                            json={"provider": "ollama", "model": "canary:1b", "token": canary})[1]))
            invalid = client.post("/downloads", json={"provider": "huggingface", "model": "bad id!", "token": canary})
            seen.append(invalid.text)
            for path in (f"/downloads/{job_id}/events?format=ndjson", f"/downloads/{job_id}/events", "/downloads",
                         f"/downloads/{job_id}", "/models"):
                seen.append(client.get(path).text)
            jobs = len(client.get("/downloads").json()["jobs"])
            assert jobs == 3
            with client.stream("GET", "/events?format=ndjson") as feed:
                lines = (line for line in feed.iter_lines() if line.strip())
                seen.extend(next(lines) for _ in range(jobs))  # the feed opens with every job
    finally:
        proc.terminate()
        proc.wait(15)
    log = log_path.read_text()
    assert good.status_code == 201
    done = json.loads(seen[1])
    assert done["state"] == "complete", done  # the token was really used
    assert any(r.auth_present for r in hf_front.requests(method="GET", path_contains="/resolve/"))
    assert "POST /api/models/downloads" in log and f"job {job_id} complete" in log  # the log is real
    urls = [f"{r.path}?{r.query}" for r in hf_front.log] + [str(r) for r in ollama_emulator.requests]
    for place, text in (("log", log), ("urls", "\n".join(urls)), ("answers", "\n".join(seen))):
        assert canary not in text, f"token leaked into {place}"
    assert canary[4:] not in log
