"""Fixtures of the fault-injection suite: real servers behind a :class:`FaultProxy`.

Every source is a real server with the fault proxy in front of it:

* ``hf_source``: the olah Hub mirror behind ``hf_front`` (Hub answers, Range,
  a token required for the repo), behind the proxy; provider ``huggingface``.
* ``registry_source``: Debian's docker-registry behind the proxy; provider
  ``ollama-registry`` (the name carries the proxy's host, ``insecure=True``).
* ``ollama_source``: the Ollama ``/api/pull`` emulator behind the proxy;
  provider ``ollama``.
* ``oci_source``: a Docker model artifact in the same docker-registry, behind
  the proxy; provider ``oci`` into a Docker Model Runner store.
* ``source``: ``hf_source``, ``registry_source`` and ``oci_source`` in turn
  (the providers that move bytes through modelpull's own transfer engine).

Everything the suite sees (events, log records, proxy logs, subprocess output
and command lines, service answers) is recorded in the session's
:class:`Capture`; ``test_zz_canary.py`` runs last and searches it all for the
canary token that every Hub download here carries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import secrets
import subprocess
import sys
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelpull import DownloadProgress, DownloadStatus, download_model
from tests.registry.conftest import registry  # noqa: F401  (the session's docker-registry)
from tests.servers import wait_until  # noqa: F401  (used by the fault tests)
from tests.servers.fault_proxy import FaultProxy
from tests.servers.oci_artifacts import (
    DOCKER_V01,
    GGUF,
    TEMPLATE,
    Layer,
    docker_config,
    fresh_repo,
    push_artifact,
)
from tests.servers.registry import DockerRegistry
from tests.service.conftest import start_service  # noqa: F401  (modelpull serve, thread or process)

MB = 1_000_000
#: the token every Hub download of this suite carries; nothing may ever show it
CANARY = "hf_canary" + secrets.token_hex(10)
#: the Hub file and the registry weights blob of a default source
BIG = 6 * MB
#: short limits so faults are detected and given up on quickly
FAST = {"stall_timeout": 1.0, "max_retries": 3}

# 127.0.0.2 is "another host" in the redirect tests: never through a proxy.
for _var in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h]
    if "127.0.0.2" not in _hosts:
        os.environ[_var] = ",".join([*_hosts, "127.0.0.2"])


def payload(size: int, seed: str) -> bytes:
    """``size`` reproducible random bytes."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ capture
class Capture:
    """Everything the suite saw, by where it came from (for the canary scan)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.canary_uses = 0  # downloads, CLI runs and service jobs given the canary

    def add(self, where: str, text: object) -> None:
        self.items.append((where, text if isinstance(text, str) else repr(text)))

    def where(self, needle: str) -> list[str]:
        return [where for where, text in self.items if needle in text]


_CAPTURE = Capture()


@pytest.fixture(scope="session")
def capture() -> Capture:
    return _CAPTURE


class _LogCapture(logging.Handler):
    def __init__(self, sink: Capture) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name} {record.levelname}: {record.getMessage()}"
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        except Exception as exc:  # noqa: BLE001 - a broken record must not break a test
            text = f"{record.name}: unformattable record ({exc})"
        self.sink.add(f"log:{record.name}", text)


@pytest.fixture(autouse=True)
def _record_every_log_line(capture: Capture) -> Iterator[None]:
    """Every log record of every library (httpx URLs, aiohttp, modelpull, uvicorn) at DEBUG."""
    root = logging.getLogger()
    handler = _LogCapture(capture)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# ------------------------------------------------------------------ figures
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class Figures:
    """Numbers the suite measured (faults survived, bytes fetched twice, detection times),
    written to ``test-artifacts/fault-figures.json`` for docs/reliability.md."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def record(self, case: str, provider: str, **values: Any) -> None:
        self.rows.append({"case": case, "provider": provider, **values})


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    found = Figures()
    yield found
    if found.rows:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "fault-figures.json").write_text(json.dumps(found.rows, indent=1) + "\n")


# ------------------------------------------------------------------ proxies
@pytest.fixture
def make_proxy(capture: Capture) -> Iterator[Callable[..., FaultProxy]]:
    """``make_proxy(upstream_url, host="127.0.0.1")``: a started proxy, stopped after the test."""
    proxies: list[FaultProxy] = []

    def make(upstream: str, host: str = "127.0.0.1") -> FaultProxy:
        proxy = FaultProxy(upstream, host=host).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()
        capture.add("proxy-log", proxy.text())


# ------------------------------------------------------------------ events
def check_contract(events: list[DownloadProgress]) -> None:
    """What every event list must show, whatever the faults."""
    assert events, "no events at all"
    assert events[0].status is DownloadStatus.STARTING, events[0]
    terminal = [e for e in events if e.is_terminal]
    assert len(terminal) == 1 and events[-1] is terminal[0], [e.status for e in events]
    done = [e.downloaded_bytes or 0 for e in events]
    assert done == sorted(done), f"downloaded_bytes went backwards: {done}"
    percent = [e.percent or 0 for e in events]
    assert percent == sorted(percent), f"percent went backwards: {percent}"
    if events[-1].status is DownloadStatus.ERROR:
        assert events[-1].error_code and events[-1].message


async def collect(provider: str, model: str, **kwargs: Any) -> list[DownloadProgress]:
    """All events of one download (recorded for the canary scan), checked against the contract."""
    events: list[DownloadProgress] = []
    if kwargs.get("token") == CANARY:
        _CAPTURE.canary_uses += 1
    async for event in download_model(provider, model, **kwargs):
        events.append(event)
        _CAPTURE.add("event", json.dumps(event.to_dict()))
        _CAPTURE.add("event-repr", repr(event))
    check_contract(events)
    return events


# ------------------------------------------------------------------ sources
@dataclass
class Source:
    """A model on a real server, reached through ``proxy``; ``pull()`` downloads it."""

    provider: str
    model: str
    proxy: FaultProxy
    base_url: str | None
    options: dict[str, Any]
    token: str | None
    #: fnmatch pattern of the big file's URL path at the proxy
    big_path: str
    big_size: int
    #: sha256 of the big file (it names the file's blob and partial)
    big_hex: str
    #: fnmatch pattern of the metadata request made before any file (file list, manifest)
    meta_path: str
    total_size: int
    #: the folder the provider writes (HF cache or Ollama store)
    store: Path
    #: expected sha256 per stored file: name -> hex
    expected: dict[str, str]
    locate: Callable[[], dict[str, Path]] = field(repr=False, default=dict)

    async def pull(self, **options: Any) -> list[DownloadProgress]:
        return await collect(self.provider, self.model, token=self.token, base_url=self.base_url,
                             **{**self.options, **options})

    def published(self) -> bool:
        """Does the store list the model as present (snapshot / manifest)?"""
        return bool(self.locate())

    def verify(self) -> None:
        """Every published file is there with the digest the source announced."""
        files = self.locate()
        assert set(files) == set(self.expected), (sorted(files), sorted(self.expected))
        for name, path in files.items():
            assert sha256(path.read_bytes()) == self.expected[name], f"{name} is corrupt"

    def cli_args(self, *extra: str) -> list[str]:
        args = [sys.executable, "-m", "modelpull.cli", "pull", self.provider, self.model, "--json"]
        if self.base_url:
            args += ["--base-url", self.base_url]
        for key, value in self.options.items():
            args += ["-o", f"{key}={value}"]
        return args + list(extra)

    def cli_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.token:
            env["MODELPULL_TOKEN"] = self.token  # never on the command line
        return env

    def leftovers(self, of_big_file: bool = False) -> list[Path]:
        """Partial downloads and part state still in the store (only the big file's, if asked)."""
        found = [p for p in self.store.rglob("*")
                 if p.name.endswith((".incomplete", ".partial", ".parts.json", ".tmp"))]
        return [p for p in found if self.big_hex in p.name] if of_big_file else found


def hf_repo_source(olah: Any, hf_front: Any, proxy: FaultProxy, store: Path, size: int = BIG,
                   extra: dict[str, bytes] | None = None) -> Source:
    repo_id = f"faults/m-{uuid.uuid4().hex[:10]}"
    files = {"config.json": b'{"model_type": "llama"}\n', "model.safetensors": payload(size, repo_id)}
    files.update(extra or {})
    olah.make_repo(repo_id, files)
    hf_front.serve_lfs_from_disk()
    hf_front.require_token(CANARY, repo_id=repo_id)
    folder = store / ("models--" + repo_id.replace("/", "--"))

    def locate() -> dict[str, Path]:
        ref = folder / "refs" / "main"
        if not ref.is_file():
            return {}
        snapshot = folder / "snapshots" / ref.read_text().strip()
        return {name: snapshot / name for name in files if (snapshot / name).exists()}

    return Source(
        provider="huggingface", model=repo_id, proxy=proxy, base_url=proxy.url,
        options={"cache_dir": str(store)}, token=CANARY,
        big_path="*/resolve/*/model.safetensors", big_size=size, big_hex=sha256(files["model.safetensors"]),
        meta_path=f"/api/models/{repo_id}/*",
        total_size=sum(len(b) for b in files.values()), store=store,
        expected={name: sha256(data) for name, data in files.items()}, locate=locate,
    )


def registry_model_source(registry: DockerRegistry, proxy: FaultProxy, store: Path, size: int = BIG) -> Source:  # noqa: F811
    model = registry.push_tiny(weights=size)
    weights = model.layer_digests[0]
    manifest = store / "manifests" / proxy.netloc / model.repo / model.tag

    def locate() -> dict[str, Path]:
        if not manifest.is_file():
            return {}
        found = {"manifest": manifest}
        for digest in model.blobs:
            found[digest] = store / "blobs" / ("sha256-" + digest.split(":")[1])
        return found

    expected = {digest: digest.split(":")[1] for digest in model.blobs}
    expected["manifest"] = sha256(model.manifest)
    return Source(
        provider="ollama-registry", model=f"{proxy.netloc}/{model.repo}:{model.tag}", proxy=proxy,
        base_url=None, options={"insecure": True, "models_dir": str(store)}, token=None,
        big_path=f"/v2/{model.repo}/blobs/{weights}", big_size=size, big_hex=weights.split(":")[1],
        meta_path=f"/v2/{model.repo}/manifests/*",
        total_size=model.total_size,
        store=store, expected=expected, locate=locate,
    )


def oci_model_source(registry: DockerRegistry, proxy: FaultProxy, store: Path, size: int = BIG) -> Source:  # noqa: F811
    """A Docker model artifact (GGUF weights, a chat template) pulled by ``oci`` into a Docker Model Runner store."""
    repo = fresh_repo("faults")
    weights = payload(size, repo)
    layers = [Layer(GGUF, weights), Layer(TEMPLATE, b"{{ messages }}")]
    pushed = push_artifact(registry, repo, "Q4_K_M", DOCKER_V01, docker_config("gguf", layers), layers)
    model_id = "sha256:" + sha256(pushed.manifest)

    def locate() -> dict[str, Path]:
        try:
            index = json.loads((store / "models.json").read_bytes())["models"]
        except (OSError, ValueError, KeyError):
            return {}
        if not any(entry.get("id") == model_id for entry in index):
            return {}
        found = {"manifest": store / "manifests" / "sha256" / model_id[7:]}
        found.update({digest: store / "blobs" / "sha256" / digest[7:] for digest in pushed.blobs})
        return found

    expected = {digest: digest[7:] for digest in pushed.blobs}
    expected["manifest"] = model_id[7:]
    return Source(
        provider="oci", model=f"{proxy.netloc}/{repo}:Q4_K_M", proxy=proxy, base_url=None,
        options={"insecure": True, "models_dir": str(store)}, token=None,
        big_path=f"/v2/{repo}/blobs/{layers[0].digest}", big_size=size, big_hex=sha256(weights),
        meta_path=f"/v2/{repo}/manifests/*", total_size=sum(len(b) for b in pushed.blobs.values()),
        store=store, expected=expected, locate=locate,
    )


@pytest.fixture
def hf_source(olah: Any, hf_front: Any, make_proxy: Callable[..., FaultProxy], tmp_path: Path) -> Source:
    return hf_repo_source(olah, hf_front, make_proxy(hf_front.endpoint), tmp_path / "hf-cache")


@pytest.fixture
def registry_source(registry: DockerRegistry,  # noqa: F811 - the fixture imported above
                    make_proxy: Callable[..., FaultProxy], tmp_path: Path) -> Source:
    return registry_model_source(registry, make_proxy(registry.url), tmp_path / "ollama")


@pytest.fixture
def oci_source(registry: DockerRegistry,  # noqa: F811 - the fixture imported above
               make_proxy: Callable[..., FaultProxy], tmp_path: Path) -> Source:
    return oci_model_source(registry, make_proxy(registry.url), tmp_path / "docker-models")


@pytest.fixture(params=["huggingface", "ollama-registry", "oci"])
def source(request: pytest.FixtureRequest) -> Source:
    """Each provider whose bytes go through modelpull's own transfer engine."""
    fixture = {"huggingface": "hf_source", "ollama-registry": "registry_source", "oci": "oci_source"}
    return request.getfixturevalue(fixture[request.param])


@dataclass
class OllamaSource:
    emulator: Any
    proxy: FaultProxy
    model: str
    layer_sizes: list[int]

    @property
    def total_size(self) -> int:
        return sum(self.layer_sizes)

    async def pull(self, **options: Any) -> list[DownloadProgress]:
        return await collect("ollama", self.model, base_url=self.proxy.url, **options)


@pytest.fixture
def ollama_source(ollama_emulator: Any, make_proxy: Callable[..., FaultProxy]) -> OllamaSource:
    name = f"faults{uuid.uuid4().hex[:8]}:1b"
    sizes = [BIG, 1_500, 100]
    ollama_emulator.add_model(name, sizes, bytes_per_sec=6 * MB)
    return OllamaSource(ollama_emulator, make_proxy(ollama_emulator.base_url), name, sizes)


# ------------------------------------------------------------------ processes
def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a CLI or service process; its command line is recorded for the canary scan."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, stdin=subprocess.DEVNULL)
    record_process_title(proc.pid)
    return proc


def record_process_title(pid: int) -> None:
    for name in ("cmdline", "comm"):
        try:
            raw = Path(f"/proc/{pid}/{name}").read_bytes()
        except OSError:
            continue
        _CAPTURE.add(f"proc:{name}", raw.replace(b"\0", b" ").decode(errors="replace"))


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[str, str]:
    """Wait for a spawned process; record and return its stdout and stderr."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    _CAPTURE.add("stdout", out)
    _CAPTURE.add("stderr", err)
    return out, err


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


async def aiter_events(gen: AsyncIterator[DownloadProgress]) -> list[DownloadProgress]:
    return [event async for event in gen]
