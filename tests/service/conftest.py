"""The download service under test: the real app served by uvicorn on loopback.

* ``start_service(**config)`` (function fixture): a factory. By default the
  app runs under uvicorn in a thread of this process (fast to start; its log
  lines are captured); ``process=True`` runs ``modelpull serve`` as a real
  subprocess, stdout and stderr captured to a file.
* ``service``: a thread-served service whose defaults point at the
  ``hf_front`` (Hub) and ``ollama_emulator`` (Ollama server) fixtures, with a
  fresh HF cache, Ollama store and LM Studio folder under ``tmp_path``.

Helpers read SSE and NDJSON streams the way a client would.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelpull.service import ServiceConfig, create_app
from modelpull.service._app import service_server
from tests.servers import wait_until

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


@dataclass
class Service:
    """A running service: ``url`` (its root) and ``api`` (``url + /api/models``)."""

    url: str
    config: ServiceConfig
    stop: Callable[[], None]
    log_lines: Callable[[], list[str]]
    api_key: str | None = None
    dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return self.url + "/api/models"

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.api, headers=headers, timeout=30, **kwargs)

    def log_text(self) -> str:
        return "\n".join(self.log_lines())


def _serve_in_thread(config: ServiceConfig) -> Service:
    config.port = config.port or free_port()
    app = create_app(config)
    capture = _Capture()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access", "modelpull")]
    for logger in loggers:
        logger.addHandler(capture)
        logger.setLevel(logging.INFO)
    server = service_server(app, host=config.host, port=config.port, log_config=None, log_level="info",
                            timeout_graceful_shutdown=2, lifespan="on")
    thread = threading.Thread(target=server.run, name="modelpull-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start:\n" + "\n".join(capture.lines))
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(15)
        for logger in loggers:
            logger.removeHandler(capture)

    return Service(f"http://127.0.0.1:{config.port}", config, stop, lambda: list(capture.lines),
                   api_key=config.api_key)


def serve_process(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``modelpull serve ARGS`` as a subprocess, both outputs into ``log_path``.

    Its journal goes to ``<log_path without suffix>-data`` unless ``--data-dir`` or ``env``
    names one: never the user's data folder, never another test's.
    """
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed here once it has it
    data_dir = str(log_path.with_name(log_path.stem + "-data"))
    try:
        return subprocess.Popen(
            [sys.executable, "-c", "from modelpull.cli import main; main()", "serve", *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "MODELPULL_DATA_DIR": data_dir, **(env or {})},
        )
    finally:
        log.close()


def _serve_process(config: ServiceConfig, log_path: Path) -> Service:
    config.port = config.port or free_port()
    args = ["--host", config.host, "--port", str(config.port), "--log-level", "info",
            "--keep-finished", str(config.keep_finished)]
    for flag, value in (("--cache-dir", config.hf_cache_dir), ("--hf-endpoint", config.hf_endpoint),
                        ("--ollama-host", config.ollama_url), ("--ollama-models", config.ollama_models_dir),
                        ("--lmstudio-dir", config.lmstudio_dir)):
        if value:
            args += [flag, value]
    for origin in config.cors_origins:
        args += ["--cors-origin", origin]
    env = {"MODELPULL_API_KEY": config.api_key} if config.api_key else {}
    proc = serve_process(args, log_path, env)
    url = f"http://127.0.0.1:{config.port}"
    deadline = time.monotonic() + 30
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    while True:
        if proc.poll() is not None:
            raise RuntimeError("modelpull serve exited:\n" + log_path.read_text(errors="replace"))
        try:
            if httpx.get(url + "/api/models/providers", headers=headers, timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("modelpull serve did not answer:\n" + log_path.read_text(errors="replace"))
        time.sleep(0.1)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def lines() -> list[str]:
        return log_path.read_text(errors="replace").splitlines()

    return Service(url, config, stop, lines, api_key=config.api_key)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(process: bool = False, **overrides: Any) -> Service:
        dirs = {
            "hf": tmp_path / f"hf-cache-{len(started)}",
            "ollama": tmp_path / f"ollama-{len(started)}",
            "lmstudio": tmp_path / f"lmstudio-{len(started)}",
        }
        settings: dict[str, Any] = {
            "port": 0,
            "hf_cache_dir": str(dirs["hf"]),
            "ollama_models_dir": None,
            "lmstudio_dir": str(dirs["lmstudio"]),
        }
        settings.update(overrides)
        config = ServiceConfig(**settings)
        if process:
            svc = _serve_process(config, tmp_path / f"serve-{len(started)}.log")
        else:
            svc = _serve_in_thread(config)
        svc.dirs = dirs
        started.append(svc)
        return svc

    yield start
    for svc in reversed(started):
        svc.stop()


@pytest.fixture
def service(start_service: Callable[..., Service], hf_front: Any, ollama_emulator: Any) -> Service:
    """Service whose defaults are the test Hub front and the Ollama emulator."""
    return start_service(hf_endpoint=hf_front.endpoint, ollama_url=ollama_emulator.base_url)


@pytest.fixture
def repo_id() -> str:
    """A fresh repo id for this test."""
    return f"svc/m-{uuid.uuid4().hex[:10]}"


# -- reading streams ---------------------------------------------------------------
def parse_sse(text: str) -> list[dict[str, Any]]:
    """SSE text -> [{"id": int|None, "data": parsed JSON}] (comments and retry skipped)."""
    events: list[dict[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event_id: int | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("id:"):
                event_id = int(line[3:].strip())
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data:
            events.append({"id": event_id, "data": json.loads("\n".join(data))})
    return events


def read_sse(client: httpx.Client, method: str, path: str, *, stop_after: int | None = None,
             headers: dict[str, str] | None = None, **kwargs: Any) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """Read an SSE response to its end (or ``stop_after`` events, then disconnect)."""
    events: list[dict[str, Any]] = []
    with client.stream(method, path, headers=headers, **kwargs) as response:
        if response.status_code != 200:
            response.read()
            return response, events
        buffer = ""
        for chunk in response.iter_text():
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                events.extend(parse_sse(block + "\n\n"))
                if stop_after is not None and len(events) >= stop_after:
                    return response, events
    return response, events


def read_ndjson(client: httpx.Client, path: str, **kwargs: Any) -> list[dict[str, Any]]:
    with client.stream("GET", path, **kwargs) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line.strip()]


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, step: float = 0.05) -> Any:
    return wait_until(predicate, timeout, step)


def wait_job(client: httpx.Client, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait for a job to finish; return its view."""
    def done() -> dict[str, Any] | None:
        view = client.get(f"/downloads/{job_id}").json()
        return view if view["state"] != "running" else None

    return wait_for(done, timeout)


PROGRESS_FIELDS = ("status", "message", "percent", "downloaded_bytes", "total_bytes", "error_code",
                   "path", "speed_bps", "eta_seconds", "current")
