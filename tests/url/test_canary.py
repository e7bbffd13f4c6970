"""The token canary for the ``url`` source: the token given shows up in no output at all.

The token is used for real (nginx's /private/ location refuses requests
without it) through the library, the CLI and the service, on paths that work,
that fail and that redirect to another host; then every event, log line
(every logger, DEBUG), exception, CLI output, service answer and server log,
and every file the downloads left, is searched for it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelpull import ModelpullError, plan_download
from tests.servers import wait_until
from tests.servers.nginx import Nginx
from tests.servers.plain_http import PlainFileServer
from tests.service.conftest import start_service  # noqa: F401  (the service, in a thread)
from tests.url.conftest import FILES, TOKEN, collect, sha256

#: the token without its readable prefix: a leak of any part of it counts
NEEDLES = (TOKEN, TOKEN[len("url-canary-"):], TOKEN[-12:])


async def test_the_token_is_in_no_output(
    nginx: Nginx, other: PlainFileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    start_service: Callable[..., Any],
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    folder = tmp_path / "files"
    small = sha256(FILES["small.gguf"])

    # -- the library: a download that works, one refused, one missing, one redirected, a plan
    runs = [
        dict(model=f"{nginx.url}/private/small.gguf", sha256=small),
        dict(model=f"{nginx.url}/private/absent.gguf"),
        dict(model=f"{nginx.url}/private/small.gguf", sha256="0" * 64, local_dir=str(tmp_path / "bad")),
        dict(model=f"{nginx.url}/redirect/small.gguf", local_dir=str(tmp_path / "redirected")),
    ]
    codes = []
    for run in runs:
        options = {"local_dir": str(folder), **run}
        events, _ = await collect(options.pop("model"), token=TOKEN, **options)
        codes.append(events[-1].error_code)
        seen += [repr(e) for e in events] + [json.dumps(e.to_dict()) for e in events]
    assert codes == [None, "not_found", "checksum_mismatch", None]
    refusing = PlainFileServer()
    refusing.start()
    try:
        refusing.token = "another-token"
        refusing.add("/x.gguf", b"x" * 1000)
        for url in (f"{refusing.url}/x.gguf", "http://127.0.0.1:9/x.gguf"):
            with pytest.raises(ModelpullError) as caught:
                await plan_download("url", url, token=TOKEN, local_dir=str(tmp_path / "plan"))
            seen.append(f"{caught.value!s} {caught.value!r} {''.join(traceback.format_exception(caught.value))}")
        assert refusing.log and all(r.auth_present for r in refusing.log)
    finally:
        refusing.stop()

    # -- the CLI, token by environment: a success and a failure
    env = {**os.environ, "MODELPULL_TOKEN": TOKEN}
    for url, code in ((f"{nginx.url}/private/model.gguf", 0), (f"{nginx.url}/private/absent.gguf", 1)):
        done = subprocess.run(
            [sys.executable, "-m", "modelpull.cli", "pull", "url", url, "--local-dir", str(tmp_path / "cli"),
             "--json"], env=env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == code, done.stderr
        seen += [done.stdout, done.stderr]

    # -- the service, token in the body
    service = start_service(url_dir=str(tmp_path / "service"))
    with service.client() as client:
        job = client.post("/downloads", json={"provider": "url", "model": f"{nginx.url}/private/small.gguf",
                                              "token": TOKEN}).json()
        wait_until(lambda: client.get(f"/downloads/{job['id']}").json()["state"] != "running", timeout=60)
        assert client.get(f"/downloads/{job['id']}").json()["state"] == "complete"
        seen += [client.get(f"/downloads/{job['id']}/events?format=ndjson").text,
                 client.get("/downloads").text, client.get("/models", params={"provider": "url"}).text]
    seen.append(service.log_text())

    # -- the token was really used, and went nowhere else
    used = [r for r in nginx.requests("/private/") if r.auth_present]
    assert len(used) >= 8
    assert other.log and not any(r.auth_present for r in other.log)
    seen.append(caplog.text)
    seen += [nginx.access_log.read_text(), (nginx.workdir / "error.log").read_text()]
    leaks = [f"{needle!r} in output {i}" for i, text in enumerate(seen) for needle in NEEDLES if needle in text]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaks += [f"{needle!r} in {path}" for needle in NEEDLES if needle.encode() in data]
    assert not leaks, leaks
