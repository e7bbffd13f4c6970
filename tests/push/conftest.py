"""Fixtures for ``push``: real sources and real destinations on loopback, never mocks.

* ``registry`` (session): Debian's docker-registry (CNCF Distribution), the destination.
* ``front`` (function): a :class:`RegistryFront` before it that counts upload bytes and can
  refuse pushes (``front.refuse``) or hold each upload body until whole (``buffer_uploads``).
* ``hf_model`` / ``gguf_model`` / ``ollama_model`` (session): a model already in its source's
  store, put there by modelpull pulling it from a real server (olah, docker-registry).
* :func:`skopeo` runs Debian's skopeo, the independent reader.
* :func:`collect` runs a push or a pull to its end and returns its events.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelpull import DownloadProgress, DownloadStatus, download_model, push
from tests.servers.registry import DockerRegistry, RegistryFront
from tests.service.conftest import start_service  # noqa: F401  (modelpull serve, for the push jobs)

SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
MODELPACK_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.ai.model.config.v0.2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fake_gguf(size: int, seed: int) -> bytes:
    header = b"GGUF" + struct.pack("<I", 3)
    return header + random.Random(seed).randbytes(size - len(header))


async def collect(events: Any) -> list[DownloadProgress]:
    found = []
    async for event in events:
        found.append(event)
    return found


def run(events: Any) -> list[DownloadProgress]:
    return asyncio.run(collect(events))


def assert_contract(events: list[DownloadProgress]) -> None:
    """The progress contract, line by line, as a push keeps it."""
    assert events[0].status is DownloadStatus.STARTING
    terminal = [e for e in events if e.is_terminal]
    assert len(terminal) == 1 and events[-1] is terminal[0]
    total = events[0].total_bytes
    for event in events[1:-1]:
        assert event.total_bytes == total, "the total moved"
    done = [e.downloaded_bytes or 0 for e in events]
    assert done == sorted(done), "bytes went backwards"
    percent = [e.percent or 0 for e in events]
    assert percent == sorted(percent), "percent went backwards"
    last = events[-1]
    if last.status is DownloadStatus.COMPLETE:
        assert last.percent == 100.0 and last.downloaded_bytes == last.total_bytes == total
        assert last.path
        if done[0] < (total or 0):  # bytes moved: a VERIFYING event, and no DOWNLOADING after it
            statuses = [e.status for e in events]
            first = statuses.index(DownloadStatus.VERIFYING)
            assert DownloadStatus.DOWNLOADING not in statuses[first:]
    else:
        assert last.error_code


def skopeo(*args: str) -> str:
    result = subprocess.run([SKOPEO, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".modelpull" not in p.relative_to(folder).parts}


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path_factory.mktemp("push-registry")) as reg:
        yield reg


@pytest.fixture
def front(registry: DockerRegistry) -> Iterator[RegistryFront]:
    with RegistryFront(registry.url) as srv:
        yield srv


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    return str(tmp_path / "push-state")


@dataclass
class SourceModel:
    """A model sitting in its source's store: how to name it, and its files as the source has them."""

    provider: str
    model: str
    options: dict[str, Any]
    files: dict[str, bytes]


@pytest.fixture(scope="session")
def hf_model(olah: Any, tmp_path_factory: pytest.TempPathFactory) -> SourceModel:
    """Safetensors weights, nested folders, small config files: pulled into an HF cache."""
    files = {
        "model-00001-of-00002.safetensors": random.Random(1).randbytes(700_000),
        "model-00002-of-00002.safetensors": random.Random(2).randbytes(300_000),
        "config.json": json.dumps({"architectures": ["TinyForCausalLM"], "hidden_size": 8}).encode(),
        "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}',
        "chat_template.jinja": b"{% for m in messages %}{{ m.content }}{% endfor %}",
        "README.md": b"# Tiny\n",
        "LICENSE": b"Apache-2.0\n",
        "subfolder/extra/weights.bin": random.Random(3).randbytes(50_000),
    }
    olah.make_repo("modelpull-push/Tiny-HF", files)
    cache = tmp_path_factory.mktemp("push-hf-cache")
    options = {"cache_dir": str(cache)}
    events = run(download_model("huggingface", "modelpull-push/Tiny-HF", base_url=olah.endpoint, **options))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    return SourceModel("huggingface", "modelpull-push/Tiny-HF", options, files)


@pytest.fixture(scope="session")
def gguf_model(olah: Any, tmp_path_factory: pytest.TempPathFactory) -> SourceModel:
    """One quantization and its projector, out of a repo of several: pulled into an HF cache."""
    files = {
        "Tiny-Q4_K_M.gguf": fake_gguf(400_000, 1),
        "Tiny-Q8_0.gguf": fake_gguf(600_000, 2),
        "mmproj-Tiny-F16.gguf": fake_gguf(80_000, 3),
        "README.md": b"# Tiny GGUF\n",
    }
    olah.make_repo("modelpull-push/Tiny-GGUF", files)
    cache = tmp_path_factory.mktemp("push-gguf-cache")
    options = {"cache_dir": str(cache)}
    events = run(download_model("gguf", "modelpull-push/Tiny-GGUF:Q4_K_M", base_url=olah.endpoint, **options))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    chosen = {k: v for k, v in files.items() if k in ("Tiny-Q4_K_M.gguf", "mmproj-Tiny-F16.gguf")}
    return SourceModel("gguf", "modelpull-push/Tiny-GGUF:Q4_K_M", options, chosen)


@pytest.fixture(scope="session")
def ollama_model(registry: DockerRegistry, tmp_path_factory: pytest.TempPathFactory) -> SourceModel:
    """An Ollama model (weights, template, params, license) pulled into an Ollama store."""
    weights = fake_gguf(500_000, 7)
    pushed = registry.push("library/tinyllama", "1b", [
        ("application/vnd.ollama.image.model", weights),
        ("application/vnd.ollama.image.template", b"{{ .System }} {{ .Prompt }}"),
        ("application/vnd.ollama.image.params", b'{"stop": ["<|end|>"]}'),
        ("application/vnd.ollama.image.license", b"MIT License\n"),
    ])
    models = tmp_path_factory.mktemp("push-ollama-models")
    options = {"models_dir": str(models)}
    name = f"{registry.host}/library/tinyllama:1b"
    events = run(download_model("ollama-registry", name, insecure=True, **options))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    files = {"model.gguf": weights, "template": b"{{ .System }} {{ .Prompt }}",
             "params.json": b'{"stop": ["<|end|>"]}', "LICENSE": b"MIT License\n"}
    assert pushed.tag == "1b"
    return SourceModel("ollama-registry", name, {**options, "source_insecure": True}, files)


@pytest.fixture
def big_ollama(registry: DockerRegistry, tmp_path: Path) -> SourceModel:
    """An Ollama store holding one model with a large blob (written by hand, as Ollama lays it out)."""
    models = tmp_path / "ollama-big"
    weights = os.urandom(96 << 20)
    config = json.dumps({"model_format": "gguf", "file_type": "Q4_0"}).encode()
    blobs = {sha256(weights): weights, sha256(config): config}
    for digest, data in blobs.items():
        path = models / "blobs" / digest.replace(":", "-")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha256(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": sha256(weights),
                    "size": len(weights)}],
    }
    path = models / "manifests" / "registry.ollama.ai" / "library" / "big" / "latest"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    return SourceModel("ollama-registry", "big", {"models_dir": str(models), "offline": True},
                       {"model.gguf": weights})
