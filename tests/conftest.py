"""Shared fixtures: real local servers, never the internet, never mocks.

* ``olah`` (session): the real olah Hugging Face mirror, see tests/servers/olah.py.
* ``hf_front`` (function): Hub-like proxy in front of ``olah`` with fresh rules
  and log for each test, see tests/servers/hf_front.py.
* ``ollama_emulator`` (function): Ollama /api/pull emulator, see
  tests/servers/ollama_emulator.py.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# --- test hygiene, before any test module imports huggingface_hub ------------
# huggingface_hub reads these once at import time. The suite must never read
# or write the developer's real Hugging Face cache or token, never reach a real
# Ollama, and loopback traffic must never go through a proxy.
if not os.environ.get("MODELPULL_TEST_KEEP_ENV"):
    _hf_home = tempfile.mkdtemp(prefix="modelpull-test-hf-home-")
    os.environ["HF_HOME"] = _hf_home
    os.environ.pop("HF_HUB_CACHE", None)
    os.environ.pop("HUGGINGFACE_HUB_CACHE", None)
    for _var in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_ENDPOINT",
        "OLLAMA_HOST",
        "OLLAMA_MODELS",
        "HF_HUB_OFFLINE",
        "MODELPULL_DATA_DIR",
    ):
        os.environ.pop(_var, None)
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
_no_proxy = [p for p in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if p]
for _h in ("127.0.0.1", "localhost"):
    if _h not in _no_proxy:
        _no_proxy.append(_h)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(_no_proxy)

# make "tests.servers" importable however pytest was started
_root = str(Path(__file__).resolve().parents[1])
if _root not in sys.path:
    sys.path.insert(0, _root)

from tests.servers.hf_front import HfFront
from tests.servers.olah import OlahServer, find_olah_cli
from tests.servers.ollama_emulator import OllamaEmulator


@pytest.fixture(scope="session")
def olah(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OlahServer]:
    """The real olah mirror on a free port; ``.endpoint``, ``.make_repo(...)``."""
    try:
        cli = find_olah_cli()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    srv = OlahServer(workdir=tmp_path_factory.mktemp("olah"), cli=cli)
    try:
        srv.start()
    except RuntimeError as exc:
        pytest.fail(f"could not start olah ({cli}): {exc}", pytrace=False)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def hf_front(olah: OlahServer) -> Iterator[HfFront]:
    """A fresh Hub-like front (no rules, empty log) over the session's olah."""
    front = HfFront(olah.endpoint, lfs_store=olah.repo_path)
    front.start()
    try:
        yield front
    finally:
        front.stop()


@pytest.fixture
def ollama_emulator() -> Iterator[OllamaEmulator]:
    """A fresh Ollama emulator; ``.base_url``, ``.add_model(...)``."""
    emu = OllamaEmulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
