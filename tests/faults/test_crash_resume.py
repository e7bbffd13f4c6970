"""Case 6: SIGKILL a CLI pull (and the service process) at about 50 %, run it again.

The kill comes when the proxy has sent half of the big file, at no moment
chosen to suit the downloader. The second run must finish, with a correct
digest, having fetched less than 10 % of the file a second time (counted at
the proxy: body bytes sent over both runs minus the file size).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.servers.fault_proxy import FaultProxy
from tests.servers.registry import DockerRegistry
from tests.service.conftest import free_port, serve_process

from .conftest import (
    MB,
    Capture,
    Figures,
    Source,
    finish,
    hf_repo_source,
    json_lines,
    record_process_title,
    registry_model_source,
    spawn,
    wait_until,
)

SIZE = 16 * MB
#: bytes per second per connection while the first run is to be killed (about 5 s to the middle)
RATE = 750_000


def make_source(provider: str, olah: Any, hf_front: Any, registry: DockerRegistry,
                make_proxy: Callable[..., FaultProxy], tmp_path: Path) -> Source:
    if provider == "huggingface":
        return hf_repo_source(olah, hf_front, make_proxy(hf_front.endpoint), tmp_path / "hf-cache", SIZE)
    return registry_model_source(registry, make_proxy(registry.url), tmp_path / "ollama", SIZE)


def kill_at_half(proc: subprocess.Popen[Any], source: Source) -> int:
    """SIGKILL ``proc`` once the proxy has sent half of the big file; returns the bytes sent then."""
    def half() -> bool:
        assert proc.poll() is None, "the process ended before it was killed"
        return source.proxy.body_bytes(source.big_path) >= SIZE // 2

    wait_until(half, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    source.proxy.wait_idle()
    return source.proxy.body_bytes(source.big_path)


def check_second_run(source: Source, figures: Figures, provider: str, at_kill: int, how: str) -> None:
    assert at_kill < SIZE, "the first run finished before the kill"
    assert source.proxy.wait_idle()  # the log is final
    total = source.proxy.body_bytes(source.big_path)
    refetched = total - SIZE
    figures.record(f"6-sigkill-{how}", provider, file_bytes=SIZE, sent_before_kill=at_kill,
                   sent_after_kill=total - at_kill, refetched=refetched,
                   refetched_percent=round(100 * refetched / SIZE, 2))
    assert 0 <= refetched < SIZE // 10, f"{refetched} bytes of {SIZE} fetched twice"
    ranges = [r for r in source.proxy.ranges(source.big_path) if r]
    assert any(not r.startswith("bytes=0-") for r in ranges), ranges  # a true resume, not a restart


def test_6_sigkill_a_cli_pull_at_half_then_rerun_resumes(
    olah: Any, hf_front: Any, registry: DockerRegistry, make_proxy: Callable[..., FaultProxy],
    tmp_path: Path, figures: Figures, capture: Capture,
) -> None:
    # Both providers at once: the two slow first runs overlap instead of adding up.
    sources = {p: make_source(p, olah, hf_front, registry, make_proxy, tmp_path)
               for p in ("huggingface", "ollama-registry")}
    runs = {}
    for provider, source in sources.items():
        rule = source.proxy.throttle(RATE, path=source.big_path)
        if source.token:
            capture.canary_uses += 1
        runs[provider] = (spawn(source.cli_args(), env=source.cli_env()), rule)
    killed = {p: kill_at_half(proc, sources[p]) for p, (proc, _) in runs.items()}
    for provider, (proc, rule) in runs.items():
        finish(proc)
        sources[provider].proxy.remove(rule)
        assert not sources[provider].published()

    for provider, source in sources.items():
        second = spawn(source.cli_args(), env=source.cli_env())
        out, err = finish(second)
        assert second.returncode == 0, err
        events = json_lines(out)
        assert events[-1]["status"] == "complete", events[-1]
        assert events[0]["downloaded_bytes"] > 0  # the plan found the partial
        source.verify()
        assert not source.leftovers(), source.leftovers()
        check_second_run(source, figures, provider, killed[provider], "cli")


def launch_service(tmp_path: Path, name: str, **flags: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``modelpull serve`` as a real process (its own session of the suite's helpers)."""
    port = free_port()
    args = ["--port", str(port), "--log-level", "info"]
    for flag, value in flags.items():
        args += [f"--{flag.replace('_', '-')}", value]
    log_path = tmp_path / f"{name}.log"
    proc = serve_process(args, log_path)
    record_process_title(proc.pid)
    url = f"http://127.0.0.1:{port}/api/models"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log_path.read_text()
        try:
            if httpx.get(url + "/providers", timeout=2, trust_env=False).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "modelpull serve did not answer"
        time.sleep(0.1)
    return proc, url, log_path


def job_body(source: Source) -> dict[str, Any]:
    options = {k: v for k, v in source.options.items() if k not in ("cache_dir", "models_dir")}
    body: dict[str, Any] = {"provider": source.provider, "model": source.model, "options": options}
    if source.base_url:
        body["base_url"] = source.base_url
    if source.token:
        body["token"] = source.token
    return body


def test_6_sigkill_the_service_at_half_then_a_new_service_resumes(
    olah: Any, hf_front: Any, registry: DockerRegistry, make_proxy: Callable[..., FaultProxy],
    tmp_path: Path, figures: Figures, capture: Capture,
) -> None:
    sources = {p: make_source(p, olah, hf_front, registry, make_proxy, tmp_path)
               for p in ("huggingface", "ollama-registry")}
    dirs = {"cache_dir": str(tmp_path / "hf-cache"), "ollama_models": str(tmp_path / "ollama")}
    rules = {p: s.proxy.throttle(RATE, path=s.big_path) for p, s in sources.items()}
    proc, url, log_path = launch_service(tmp_path, "serve-1", **dirs)
    try:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            for source in sources.values():
                capture.canary_uses += bool(source.token)
                answer = client.post("/downloads", json=job_body(source))
                capture.add("service-answer", answer.text)
                assert answer.status_code == 201, answer.text
            wait_until(lambda: all(s.proxy.body_bytes(s.big_path) >= SIZE // 2 for s in sources.values()),
                       timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        capture.add("service-log", log_path.read_text(errors="replace"))
    killed = {}
    for provider, source in sources.items():
        source.proxy.wait_idle()
        source.proxy.remove(rules[provider])
        killed[provider] = source.proxy.body_bytes(source.big_path)
        assert not source.published()

    proc, url, log_path = launch_service(tmp_path, "serve-2", **dirs)
    try:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            jobs = {}
            for provider, source in sources.items():
                answer = client.post("/downloads", json=job_body(source))
                capture.add("service-answer", answer.text)
                assert answer.status_code == 201, answer.text
                jobs[provider] = answer.json()["id"]
            for provider, job_id in jobs.items():
                def finished(job_id: str = job_id) -> dict[str, Any] | None:
                    view = client.get(f"/downloads/{job_id}").json()
                    return view if view["state"] != "running" else None

                view = wait_until(finished, timeout=60)
                capture.add("service-answer", json.dumps(view))
                assert view["state"] == "complete", view
                events = client.get(f"/downloads/{job_id}/events?format=ndjson").text
                capture.add("service-events", events)
                first = json.loads(events.splitlines()[0])
                assert first["status"] == "starting" and first["downloaded_bytes"] > 0, first
    finally:
        proc.terminate()
        proc.wait(30)
        capture.add("service-log", log_path.read_text(errors="replace"))
    for provider, source in sources.items():
        source.verify()
        check_second_run(source, figures, provider, killed[provider], "service")


def test_6_ollama_cli_killed_mid_pull_then_rerun_continues_on_the_server(
    ollama_emulator: Any, make_proxy: Callable[..., FaultProxy], figures: Figures,
) -> None:
    """The Ollama server keeps its partial layer when the client dies; the next pull continues it."""
    name = "sigkill:1b"
    ollama_emulator.add_model(name, [SIZE, 100], bytes_per_sec=4 * MB)
    weights = ollama_emulator.model(name).layers[0].digest
    proxy = make_proxy(ollama_emulator.base_url)
    args = [sys.executable, "-m", "modelpull.cli", "pull", "ollama", name, "--base-url", proxy.url, "--json"]
    first = spawn(args, env=dict(os.environ))
    wait_until(lambda: ollama_emulator.progress(weights) >= SIZE // 2, timeout=30)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    finish(first)
    pull = ollama_emulator.wait_disconnect()
    ollama_emulator.assert_no_progress_after_disconnect(pull)
    kept = ollama_emulator.progress(weights)
    assert SIZE // 2 <= kept < SIZE
    second = spawn(args, env=dict(os.environ))
    out, err = finish(second)
    assert second.returncode == 0, err
    events = json_lines(out)
    assert events[-1]["status"] == "complete"
    # judged from the first event that counts the layer's bytes: before Ollama announces a layer
    # ("pulling manifest") an event may carry no total and no bytes yet
    resumed = [e for e in events if e["status"] == "downloading" and e.get("total_bytes")]
    assert resumed and resumed[0]["downloaded_bytes"] >= kept, resumed[:3]  # never started over
    figures.record("6-sigkill-cli", "ollama", file_bytes=SIZE, kept_by_server=kept)
