"""Case 9 (the service under load with faulty upstreams) and case 13 (the service's boundaries)."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers.fault_proxy import FaultProxy
from tests.servers.registry import DockerRegistry
from tests.service.conftest import free_port, serve_process

from .conftest import (
    CANARY,
    MB,
    Capture,
    Figures,
    finish,
    payload,
    record_process_title,
    wait_until,
)

JOB_OPTIONS = {"stall_timeout": 1.0, "max_retries": 2}


# ------------------------------------------------------------------ 9. load + faults
def parse_sse_strictly(raw: bytes) -> list[dict[str, Any]]:
    """Events as an EventSource dispatches them (CR, LF and CRLF all end a line)."""
    text = raw.decode("utf-8")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    events, data, event_id = [], [], None
    for line in lines:
        if line == "":
            if data:
                events.append({"id": event_id, "data": "\n".join(data)})
            data, event_id = [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
        elif field not in ("retry", "event"):
            raise AssertionError(f"unexpected SSE field {field!r} in {line!r}")
    return events


def watch_sse(url: str, job_id: str, results: dict[str, Any], api_key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.stream("GET", f"{url}/downloads/{job_id}/events", headers=headers, timeout=90,
                          trust_env=False) as response:
            raw = b"".join(response.iter_bytes())
        results[job_id] = parse_sse_strictly(raw)
    except Exception as exc:  # noqa: BLE001 - reported by the test
        results[job_id] = exc


def test_9_jobs_under_load_with_faulty_upstreams_all_end(
    olah: Any, hf_front: Any, registry: DockerRegistry, ollama_emulator: Any,
    make_proxy: Callable[..., FaultProxy], start_service: Callable[..., Any], tmp_path: Path,
    figures: Figures, capture: Capture,
) -> None:
    rng = random.Random(9)
    hub = make_proxy(hf_front.endpoint)
    reg = make_proxy(registry.url)
    ollama_proxies: list[FaultProxy] = []
    hf_front.serve_lfs_from_disk()
    service = start_service(hf_endpoint=hub.url, ollama_models_dir=str(tmp_path / "ollama"), max_running=64)
    jobs: list[tuple[dict[str, Any], set[str]]] = []  # (request body, acceptable final codes)
    # Faults a job survives, and faults it cannot: each job gets one, the mix is fixed by the seed.
    survivable = ["none", "cut", "stall", "retry_after", "truncate", "reset"]
    fatal = ["flip", "always_500"]
    for index in range(18):
        kind = (survivable + fatal)[index % 8]
        family = ("hub", "registry", "ollama")[index % 3]
        size = rng.randrange(MB, 3 * MB)
        if family == "hub":
            repo = f"load/m{index}-{uuid.uuid4().hex[:6]}"
            olah.make_repo(repo, {"config.json": b"{}", "model.safetensors": payload(size, repo)})
            hf_front.require_token(CANARY, repo_id=repo)
            body = {"provider": "huggingface", "model": repo, "token": CANARY}
            proxy, path = hub, f"/{repo}/resolve/*/model.safetensors"
        elif family == "registry":
            model = registry.push_tiny(weights=size)
            body = {"provider": "ollama-registry", "model": f"{reg.netloc}/{model.repo}:{model.tag}",
                    "options": {"insecure": True}}
            proxy, path = reg, f"/v2/{model.repo}/blobs/{model.layer_digests[0]}"
        else:
            name = f"load{index}x{uuid.uuid4().hex[:6]}:1b"
            ollama_emulator.add_model(name, [size, 100], bytes_per_sec=4 * MB)
            proxy, path = make_proxy(ollama_emulator.base_url), "/api/pull"  # one server per job
            ollama_proxies.append(proxy)
            body = {"provider": "ollama", "model": name, "base_url": proxy.url}
            kind = {"flip": "none", "truncate": "cut", "reset": "cut"}.get(kind, kind)
        options = JOB_OPTIONS if family != "ollama" else {"stall_timeout": JOB_OPTIONS["stall_timeout"]}
        body["options"] = {**body.get("options", {}), **options}
        expected = inject(proxy, path if family != "ollama" else None, kind, body)
        if family == "ollama" and kind != "none":
            expected = {"incomplete", "timeout", "server_error", "connection_failed"}
        proxy.throttle(2 * MB, path=path if family != "ollama" else None)
        jobs.append((body, expected))

    started = time.monotonic()
    with service.client() as client:
        ids = []
        for body, _ in jobs:
            answer = client.post("/downloads", json=body)
            capture.add("service-answer", answer.text)
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["id"])
        results: dict[str, Any] = {}
        watchers = [threading.Thread(target=watch_sse, args=(service.api, job_id, results)) for job_id in ids
                    for _ in range(3)]  # three watchers per job
        for watcher in watchers:
            watcher.start()
        views = wait_until(lambda: _all_finished(client, ids), timeout=90, step=0.2)
        for watcher in watchers:
            watcher.join(30)
            assert not watcher.is_alive(), "an event stream did not end with its job"
    elapsed = time.monotonic() - started
    capture.add("service-log", service.log_text())

    outcomes: dict[str, int] = {}
    for (body, expected), job_id in zip(jobs, ids):
        view = views[job_id]
        capture.add("service-answer", json.dumps(view))
        code = view["progress"]["error_code"] or "complete"
        outcomes[code] = outcomes.get(code, 0) + 1
        assert view["state"] in ("complete", "error"), view
        assert code in expected, (body["provider"], body["model"], code, view["progress"]["message"], expected)
        events = results[job_id]
        assert not isinstance(events, Exception), events
        payloads = [json.loads(e["data"]) for e in events]
        assert [p["seq"] for p in payloads] == sorted(p["seq"] for p in payloads)
        assert sum(p["status"] in ("complete", "error") for p in payloads) == 1, payloads[-3:]
        assert payloads[-1]["status"] == view["state"]
    figures.record("9-service-load", "all", jobs=len(jobs), watchers=len(watchers), outcomes=outcomes,
                   seconds_until_all_ended=round(elapsed, 1),
                   faults_fired=sum(len(p.faults_fired()) - len(p.faults_fired("throttle"))
                                    for p in (hub, reg, *ollama_proxies)))


def _all_finished(client: httpx.Client, ids: list[str]) -> dict[str, Any] | None:
    views = {job_id: client.get(f"/downloads/{job_id}").json() for job_id in ids}
    return views if all(v["state"] != "running" for v in views.values()) else None


def inject(proxy: FaultProxy, path: str | None, kind: str, body: dict[str, Any]) -> set[str]:
    """Give one job its fault; returns the error codes (or "complete") it may end with."""
    if kind == "none":
        return {"complete"}
    if kind == "cut":
        proxy.cut_after(200_000 if path else 400, path=path, times=2)
    elif kind == "stall":
        proxy.stall(10.0, after_bytes=300_000 if path else 400, path=path, times=1)
    elif kind == "retry_after":
        proxy.error(503, retry_after=1, path=path, times=1)
    elif kind == "truncate":
        proxy.truncate(300_000, path=path, times=2)
    elif kind == "reset":
        proxy.reset_mid_header(path=path, times=1)
    elif kind == "flip":
        proxy.flip(at=1000, path=path, times=None)
        return {"checksum_mismatch"}
    elif kind == "always_500":
        proxy.error(500, path=path, times=None)
        return {"server_error"}
    return {"complete"}


# ------------------------------------------------------------------ 13. boundaries
def non_loopback_address() -> str:
    """An address of this machine that is not loopback (0.0.0.0 if it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = probe.getsockname()[0]
        except OSError:
            address = "0.0.0.0"
    return address if not address.startswith("127.") else "0.0.0.0"


def every_route() -> list[tuple[str, str]]:
    """(method, path) of every route the service app has, path parameters filled in."""
    from modelpull.service import ServiceConfig, create_app

    app = create_app(ServiceConfig(host="192.0.2.1", api_key="route-listing-key"))
    found: list[tuple[str, str]] = []

    def walk(routes: Any, prefix: str) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI that includes routers lazily
            if included is not None:
                walk(included.routes, prefix + route.include_context.prefix)
                continue
            path = getattr(route, "path", None)
            if path is None:
                continue
            path = prefix + path
            path = path.replace("{job_id}", "0123456789abcdef").replace("{provider}", "huggingface")
            path = path.replace("{model:path}", "org/name").replace("{name}", "app.js")
            found.extend((method, path) for method in sorted(getattr(route, "methods", None) or {"GET"}))

    walk(app.routes, "")
    return found


#: routes that serve the static page and its files: no data, no action
PAGE_ROUTES = {"/", "/favicon.ico", "/ui", "/api/models/ui", "/api/models/ui/app.js"}


def test_13_no_endpoint_answers_without_the_key_on_a_non_loopback_address(tmp_path: Path, capture: Capture) -> None:
    host = non_loopback_address()
    key = "k-" + uuid.uuid4().hex
    port = free_port()
    log_path = tmp_path / "serve.log"
    proc = serve_process(["--host", host, "--port", str(port), "--cache-dir", str(tmp_path / "hf"),
                          "--ollama-models", str(tmp_path / "ollama"), "--log-level", "info"],
                         log_path, env={"MODELPULL_API_KEY": key})
    record_process_title(proc.pid)
    connect = "127.0.0.1" if host == "0.0.0.0" else host
    base = f"http://{connect}:{port}"
    try:
        wait_until(lambda: _answers(base), timeout=30, step=0.1)
        routes = every_route()
        api_routes = [(m, p) for m, p in routes if p not in PAGE_ROUTES]
        assert len(api_routes) >= 10, routes
        with httpx.Client(base_url=base, timeout=10, trust_env=False) as client:
            for method, path in api_routes:
                for headers in ({}, {"Authorization": "Bearer wrong-key-wrong"}, {"Authorization": key},
                                {"Authorization": f"Basic {key}"}):
                    answer = client.request(method, path, headers=headers,
                                            json={"provider": "ollama", "model": "x:1b"} if method == "POST" else None)
                    assert answer.status_code == 401, (method, path, headers, answer.status_code, answer.text[:200])
                    assert answer.json()["error_code"] == "unauthorized"
                if method == "GET":
                    assert client.head(path).status_code in (401, 405), path
            for method, path in routes:
                if path in PAGE_ROUTES:
                    answer = client.request(method, path)
                    assert answer.status_code in (200, 204, 307), (path, answer.status_code)
                    assert "job" not in answer.text.lower() or "<html" in answer.text.lower() or path.endswith(".js")
            authorized = client.get("/api/models/downloads", headers={"Authorization": f"Bearer {key}"})
            assert authorized.status_code == 200, authorized.text
    finally:
        proc.terminate()
        proc.wait(15)
        capture.add("service-log", log_path.read_text(errors="replace"))


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/api/models/providers", timeout=1, trust_env=False).status_code == 401
    except httpx.TransportError:
        return False


BAD_BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("deeply nested", b"[" * 50_000, {}),
    ("deeply nested object", b'{"a":' * 20_000, {}),
    ("huge integer", b'{"provider": "ollama", "model": "x", "options": {"n": ' + b"9" * 5000 + b"}}", {}),
    ("not utf-8", b'{"model": "\xff\xfe"}', {}),
    ("NaN", b'{"provider": NaN, "model": "x"}', {}),
    ("lone surrogate", b'{"provider": "ollama", "model": "\\ud800"}', {}),
    ("nul in name", b'{"provider": "ollama", "model": "a\\u0000b"}', {}),
    ("options array", b'{"provider": "ollama", "model": "x", "options": [1, 2]}', {}),
    ("nested option", b'{"provider": "ollama", "model": "x", "options": {"insecure": {"a": [1]}}}', {}),
    ("too many options", json.dumps({"provider": "ollama", "model": "x",
                                     "options": {f"o{i}": 1 for i in range(100)}}).encode(), {}),
    ("oversized", b'{"provider": "ollama", "model": "' + b"x" * 200_000 + b'"}', {}),
    ("empty", b"", {}),
    ("xml", b"<provider>ollama</provider>", {"Content-Type": "application/xml"}),
]


@pytest.mark.parametrize(("name", "body", "headers"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_13_malformed_or_oversized_bodies_get_4xx(
    name: str, body: bytes, headers: dict[str, str], start_service: Callable[..., Any], capture: Capture
) -> None:
    service = start_service(ollama_url="http://127.0.0.1:9")
    with service.client() as client:
        for path in ("/downloads", "/pull"):
            answer = client.post(path, content=body, headers={"Content-Type": "application/json", **headers},
                                 timeout=10)
            capture.add("service-answer", answer.text)
            assert 400 <= answer.status_code < 500, (name, path, answer.status_code, answer.text[:300])
            assert answer.json()["error_code"]
        assert client.get("/downloads").json()["jobs"] == []


def test_13_a_body_announcing_a_huge_length_is_refused_before_it_is_read(start_service: Callable[..., Any]) -> None:
    service = start_service()
    port = int(service.url.rsplit(":", 1)[1])
    for path in ("/api/models/downloads", "/api/models/pull"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         "Content-Length: 999999999\r\n\r\n{\"provider\": \"ollama\"".encode())
            head = conn.recv(4096).decode("latin-1")
        assert head.startswith("HTTP/1.1 413"), head[:200]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_bodies = st.one_of(
    _json,
    st.fixed_dictionaries({"provider": st.sampled_from(["ollama", "huggingface", "gguf", "x", ""]),
                           "model": st.text(max_size=40) | st.integers()},
                          optional={"token": _json, "base_url": _json, "options": _json}),
)


def test_13_fuzzed_json_bodies_never_get_a_5xx(start_service: Callable[..., Any], make_proxy: Callable[..., FaultProxy]) -> None:
    recorder = make_proxy("http://127.0.0.1:9")
    recorder.error(404, times=None)
    service = start_service(ollama_url=recorder.url, hf_endpoint=recorder.url, max_running=1000)
    statuses: dict[int, int] = {}
    with service.client() as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=_bodies)
        def check(body: Any) -> None:
            answer = client.post("/downloads", json=body)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            assert answer.status_code < 500, (body, answer.status_code, answer.text[:300])
            assert answer.headers["content-type"].startswith("application/json")
            if answer.status_code >= 400:
                assert answer.json()["error_code"]

        check()
    assert any(400 <= s < 500 for s in statuses), statuses


def test_13_sse_text_with_newlines_or_data_lines_cannot_break_the_stream(
    start_service: Callable[..., Any], make_proxy: Callable[..., FaultProxy], ollama_emulator: Any,
) -> None:
    """Status text from a hostile Ollama server lands in event messages; the stream stays whole."""
    proxy = make_proxy(ollama_emulator.base_url)
    evil = [
        "pulling\n\ndata: {\"status\": \"complete\", \"percent\": 100}\n\n",
        "verifying\r\rdata: {\"status\":\"error\"}\r\r",
        "x\r\nid: 999\r\nretry: 1\r\n\r\nevent: boom\r\n",
        ": comment\n\ndata:",
        "\u2028\u2029\x85 unicode line breaks",
    ]
    lines = [{"status": "pulling manifest"}]
    digest = "sha256:" + "ab" * 32
    for i, text in enumerate(evil):
        lines.append({"status": text, "digest": digest + "\n\ndata: {}", "total": 1000, "completed": 100 * (i + 1)})
    lines.append({"error": "end\n\ndata: {\"status\": \"complete\"}\n\nid: 1000\n\n"})
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    proxy.respond("/api/pull", body=body, content_type="application/x-ndjson")
    service = start_service(ollama_url=proxy.url)
    with service.client() as client:
        job_id = client.post("/downloads", json={"provider": "ollama", "model": "evil:1b"}).json()["id"]
        wait_until(lambda: client.get(f"/downloads/{job_id}").json()["state"] != "running", timeout=30)
        last_id = client.get(f"/downloads/{job_id}").json()["last_event_id"]
        raw = client.get(f"/downloads/{job_id}/events").content
        feed_raw = b""
        with client.stream("GET", "/events") as feed:
            for chunk in feed.iter_bytes():
                feed_raw += chunk
                if b"\n\n" in feed_raw.split(b"retry:", 1)[-1]:
                    break
    events = parse_sse_strictly(raw)
    assert [int(e["id"]) for e in events] == list(range(1, last_id + 1))
    payloads = [json.loads(e["data"]) for e in events]  # every event is one whole JSON document
    assert [p["status"] for p in payloads].count("complete") == 0
    assert payloads[-1]["status"] == "error" and "end\n\ndata:" in payloads[-1]["message"]
    # the hostile texts really went through: the digest as the current layer, the error verbatim
    assert any((p["current"] or "").endswith("\n\ndata: {}") for p in payloads), payloads
    for event in parse_sse_strictly(feed_raw):
        json.loads(event["data"])


def test_13_a_cli_pull_with_a_token_shows_it_nowhere(tmp_path: Path, capture: Capture) -> None:
    """A token given by environment to a failing CLI pull: not in its output or process title."""
    capture.canary_uses += 1
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MODELPULL_TOKEN": CANARY,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "modelpull.cli", "pull", "huggingface", "org/name",
                             "--base-url", "http://127.0.0.1:9", "--json", "-o", f"cache_dir={tmp_path}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    record_process_title(proc.pid)
    out, err = finish(proc, timeout=60)
    assert proc.returncode == 1
    assert json.loads(out.splitlines()[-1])["error_code"] == "connection_failed"
    assert CANARY not in out + err


def test_13_deleting_a_model_named_like_a_path_touches_nothing_outside(
    start_service: Callable[..., Any], tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("still here")
    service = start_service(ollama_url="http://127.0.0.1:9", ollama_models_dir=str(tmp_path / "ollama"))
    with service.client() as client:
        for provider in ("huggingface", "mlx", "lmstudio", "ollama", "gguf"):
            for name in ("../victim", "..%2F..%2Fvictim", "a/../../victim", "%2e%2e/%2e%2e/victim"):
                answer = client.delete(f"/models/{provider}/{name}")
                # refused (4xx) or, once the client normalised the dots away, no such route (3xx/4xx)
                assert 300 <= answer.status_code < 500, (provider, name, answer.status_code, answer.text)
    assert (victim / "keep.txt").read_text() == "still here"
