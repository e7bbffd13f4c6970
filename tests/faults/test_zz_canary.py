"""Case 12: a canary token passed through the library, the CLI and the service shows up nowhere.

This module runs last in tests/faults (its name sorts last). Every Hub download
of the suite carries the canary token (the Hub front refuses it otherwise), and
the suite records what it sees (``conftest.Capture``): events, every log line at
DEBUG of every library, proxy logs (URLs), CLI and service output, answers of
the service, process command lines. This test adds its own uses of the token
(success and failure paths of each entry point), then searches all of that, and
every file under the session's temporary folders (service logs, olah's and
docker-registry's logs, part state, stores), for the token in any form.
"""

from __future__ import annotations

import base64
import json
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelpull import ModelpullError, plan_download
from tests.servers.fault_proxy import FaultProxy
from tests.servers.registry import DockerRegistry, RegistryFront

from .conftest import (
    ARTIFACTS,
    CANARY,
    Capture,
    collect,
    finish,
    hf_repo_source,
    json_lines,
    spawn,
    wait_until,
)
from .test_crash_resume import job_body, launch_service

CREDENTIAL = f"modelpull:{CANARY}"


def needles() -> dict[str, bytes]:
    """The token as it could leak: whole, without its prefix, its random part, in a Basic header."""
    basic = base64.b64encode(CREDENTIAL.encode()).decode()
    return {
        "token": CANARY.encode(),
        "token without prefix": CANARY[3:].encode(),
        "random part": CANARY[-20:].encode(),
        "basic credential": basic.encode(),
        "basic credential (middle)": basic[8:-8].encode(),
    }


async def test_12_the_canary_token_is_in_no_output_of_the_whole_suite(
    olah: Any, hf_front: Any, registry: DockerRegistry, make_proxy: Callable[..., FaultProxy],
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capture: Capture,
) -> None:
    own: list[FaultProxy] = []
    # -- the library: a download that works, one the server refuses, one that fails in the plan
    source = hf_repo_source(olah, hf_front, make_proxy(hf_front.endpoint), tmp_path / "hf-cache")
    own.append(source.proxy)
    capture.canary_uses += 3
    events = await source.pull()
    assert events[-1].status.value == "complete", events[-1].message
    source.proxy.error(500, path=source.big_path, times=None)
    failed = await collect("huggingface", source.model, token=CANARY, base_url=source.base_url,
                           cache_dir=str(tmp_path / "other-cache"), max_retries=1, stall_timeout=1.0)
    assert failed[-1].error_code == "server_error"
    hf_front.require_token("another-token-entirely", repo_id=source.model)
    try:
        await plan_download("huggingface", source.model, token=CANARY, base_url=source.base_url)
    except ModelpullError as exc:
        capture.add("exception", f"{exc!s}\n{exc!r}\n{traceback.format_exc()}")
    else:
        raise AssertionError("a refused token should fail the plan")
    hf_front.clear_rules()
    hf_front.require_token(CANARY, repo_id=source.model)
    source.proxy.clear()

    # -- a registry whose token realm takes the credential (and one that refuses it)
    with RegistryFront(registry.url, token_auth=True, credential=CREDENTIAL) as front:
        proxy = make_proxy(front.url)
        own.append(proxy)
        model = registry.push_tiny(weights=200_000)
        name = f"{proxy.netloc}/{model.repo}:{model.tag}"
        capture.canary_uses += 2
        events = await collect("ollama-registry", name, token=CREDENTIAL, insecure=True,
                               models_dir=str(tmp_path / "ollama"))
        assert events[-1].status.value == "complete", events[-1].message
        front.credential = "modelpull:something-else"
        refused = await collect("ollama-registry", name, token=CREDENTIAL, insecure=True,
                                models_dir=str(tmp_path / "ollama-2"))
        assert refused[-1].error_code == "auth_required", refused[-1]
        assert front.token_requests

    # -- the CLI (token by environment), a success and a failure
    capture.canary_uses += 2
    cli_cache = tmp_path / "cli-cache"
    ok = spawn(source.cli_args("--cache-dir", str(cli_cache)), env=source.cli_env())
    out, err = finish(ok)
    assert ok.returncode == 0 and json_lines(out)[-1]["status"] == "complete", err
    bad = spawn([*source.cli_args("--cache-dir", str(cli_cache)), "--revision", "no-such-branch"],
                env=source.cli_env())
    out, err = finish(bad)
    assert bad.returncode == 1 and json_lines(out)[-1]["status"] == "error"

    # -- the service as a real process (token in the body), a success and a failure
    capture.canary_uses += 2
    proc, url, log_path = launch_service(tmp_path, "serve-canary", cache_dir=str(tmp_path / "svc-cache"),
                                         log_level="debug")
    try:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            good = client.post("/downloads", json=job_body(source))
            broken = client.post("/downloads", json={**job_body(source), "model": "faults/absent-model"})
            for answer in (good, broken):
                capture.add("service-answer", answer.text)
                job_id = answer.json()["id"]

                def finished(job_id: str = job_id) -> dict[str, Any] | None:
                    view = client.get(f"/downloads/{job_id}").json()
                    return view if view["state"] != "running" else None

                view = wait_until(finished, timeout=60)
                capture.add("service-answer", json.dumps(view))
                capture.add("service-events", client.get(f"/downloads/{job_id}/events").text)
                capture.add("service-events", client.get(f"/downloads/{job_id}/events?format=ndjson").text)
            assert client.get(f"/downloads/{good.json()['id']}").json()["state"] == "complete"
            assert client.get(f"/downloads/{broken.json()['id']}").json()["state"] == "error"
            capture.add("service-answer", client.get("/downloads").text)
            capture.add("service-answer", client.get("/models").text)
    finally:
        proc.terminate()
        proc.wait(15)
        capture.add("service-log", log_path.read_text(errors="replace"))

    # -- the evidence that the token was really used, then the search
    for proxy in own:
        proxy.wait_idle()
        capture.add("proxy-log", proxy.text())
    assert capture.canary_uses >= 9, capture.canary_uses
    assert any("auth=True" in text for where, text in capture.items if where == "proxy-log")
    assert any(r.auth_present for r in hf_front.log)
    kinds = {where.split(":")[0] for where, _ in capture.items}
    assert {"event", "log", "proxy-log", "stdout", "stderr", "proc", "service-log", "service-answer",
            "exception"} <= kinds, kinds

    leaks = []
    for label, needle in needles().items():
        text = needle.decode()
        leaks += [f"{label} in {where}" for where, item in capture.items if text in item]
    leaks += scan_files([tmp_path_factory.getbasetemp(), Path(os.environ.get("HF_HOME", "/nonexistent")),
                         ARTIFACTS])
    assert not leaks, "the token leaked: " + "; ".join(sorted(set(leaks))[:20])


def scan_files(roots: list[Path]) -> list[str]:
    """Every file under ``roots`` that holds the token in any form."""
    found = []
    for root in roots:
        if not root.exists():
            continue
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            for label, needle in needles().items():
                if needle in data:
                    found.append(f"{label} in file {path}")
    return found
