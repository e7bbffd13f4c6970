"""Fixtures for the ModelScope tests: the test server and the official SDK in a fresh process.

The official ``modelscope`` package reads its settings from the environment
once per process and writes a session file under ``MODELSCOPE_HOME``, so the
SDK always runs in a subprocess with its own home, cache and endpoint, as it
would for a user. Nothing here reaches the internet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.modelscope_server import ModelScopeServer

# The developer's own ModelScope settings must never leak into a test.
for _var in (
    "MODELSCOPE_ENDPOINT",
    "MODELSCOPE_DOMAIN",
    "MODELSCOPE_API_TOKEN",
    "MODELSCOPE_CACHE",
    "MODELSCOPE_PREFER_AI_SITE",
):
    os.environ.pop(_var, None)
os.environ["MODELSCOPE_HOME"] = tempfile.mkdtemp(prefix="modelpull-test-ms-home-")


@pytest.fixture
def ms_server() -> Iterator[ModelScopeServer]:
    """A fresh ModelScope server; ``.endpoint``, ``.add_model(...)``, ``.log``."""
    server = ModelScopeServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ms_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``MODELSCOPE_CACHE`` for this test (for modelpull in this process and the SDK alike)."""
    cache = tmp_path / "ms-cache"
    monkeypatch.setenv("MODELSCOPE_CACHE", str(cache))
    return cache


@dataclass
class Sdk:
    """Runs Python code that uses the official SDK in a fresh process."""

    home: Path

    def run(
        self, code: str, *, check: bool = True, **env: str | None
    ) -> subprocess.CompletedProcess[str]:
        """``code`` with the test's environment plus ``env`` (None removes a variable)."""
        full = {
            k: v for k, v in os.environ.items() if not k.startswith("MODELSCOPE_") and k != "HOME"
        }
        full.update(
            HOME=str(self.home),
            MODELSCOPE_HOME=str(self.home / ".modelscope"),
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            PYTHONWARNINGS="ignore",
        )
        if os.environ.get("MODELSCOPE_CACHE"):
            full["MODELSCOPE_CACHE"] = os.environ["MODELSCOPE_CACHE"]
        for key, value in env.items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = value
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=full,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"the SDK failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return done


@pytest.fixture
def sdk(tmp_path: Path) -> Sdk:
    home = tmp_path / "sdk-home"
    home.mkdir()
    return Sdk(home)
