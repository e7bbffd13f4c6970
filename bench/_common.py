"""Shared plumbing of the transfer benchmarks: servers, data, timed runs, the machine."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers.registry import (
    CONFIG_V1,
    MANIFEST_V2,
    OLLAMA_MODEL,
    DockerRegistry,
)

MiB = 1 << 20
GiB = 1 << 30


def clean_env() -> dict[str, str]:
    """The environment for every child: no proxies for loopback, no real caches or tokens."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    for key in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "OLLAMA_MODELS"):
        env.pop(key, None)
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["HF_HUB_DISABLE_XET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def workdir(dest: str | None) -> Path:
    """A fresh folder for downloads: under ``dest`` (the disk under test) or the temp dir."""
    return Path(tempfile.mkdtemp(prefix="modelpull-bench-", dir=dest))


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes; return their sha256 digest."""
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(8 * MiB, left))
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return "sha256:" + digest.hexdigest()


def push_file_model(registry: DockerRegistry, repo: str, tag: str, weights: Path) -> str:
    """Push a one-layer Ollama model whose weights are a file (streamed); return its digest."""
    digest = "sha256:" + _sha256_file(weights)
    config = json.dumps({"model_format": "gguf", "model_family": "bench"}).encode()
    config_digest = registry.push_blob(repo, config)
    conn = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=600)
    conn.request("POST", f"/v2/{repo}/blobs/uploads/")
    response = conn.getresponse()
    response.read()
    location = urllib.parse.urlsplit(response.headers["Location"])
    target = f"{location.path}?{location.query}&digest={digest}"
    with open(weights, "rb") as body:
        conn.request("PUT", target, body=body, headers={
            "Content-Length": str(weights.stat().st_size), "Content-Type": "application/octet-stream",
        })
        response = conn.getresponse()
        response.read()
    assert response.status == 201, response.status
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": OLLAMA_MODEL, "digest": digest, "size": weights.stat().st_size}],
    }).encode()
    conn.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest, headers={"Content-Type": MANIFEST_V2})
    response = conn.getresponse()
    response.read()
    assert response.status == 201, response.status
    conn.close()
    return digest


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def start_listener(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a helper that prints ``listening on HOST:PORT``; return it and HOST:PORT."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=clean_env())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"{args[1]} did not start: {line!r}")
    return proc, match.group(1)


def start_throttle(upstream: str, rate: float) -> tuple[subprocess.Popen[str], str]:
    return start_listener([sys.executable, str(BENCH / "throttle_proxy.py"), "--upstream", upstream,
                           "--rate", str(rate)])


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def settle() -> None:
    """Flush dirty pages so one run's writeback does not slow the next."""
    os.sync()
    time.sleep(1.0)


def run_json(args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run a child that prints one JSON object last; add its wall time and peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed ({proc.returncode}): {err[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["wall"] = wall
    result["peak_rss"] = usage.ru_maxrss * 1024
    return result


def modelpull(provider: str, model: str, **options: Any) -> dict[str, Any]:
    """One modelpull download in a fresh process; ``seconds`` = the library call's duration."""
    args = [sys.executable, str(BENCH / "_run.py"), "modelpull", provider, model]
    for key, value in options.items():
        args += ["-o", f"{key}={value}"]
    return run_json(args)


def hf_snapshot(repo_id: str, endpoint: str, cache_dir: Path) -> dict[str, Any]:
    return run_json([sys.executable, str(BENCH / "_run.py"), "hf-snapshot", repo_id,
                     "-o", f"endpoint={endpoint}", "-o", f"cache_dir={cache_dir}"])


def curl(url: str, dest: Path) -> dict[str, Any]:
    """``curl -o``; ``seconds`` is curl's own transfer time."""
    started = time.perf_counter()
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-o", str(dest), "-w", "%{time_total} %{size_download}", url],
        capture_output=True, text=True, check=True, env=clean_env(),
    )
    seconds, size = out.stdout.split()
    return {"seconds": float(seconds), "bytes": int(size), "wall": time.perf_counter() - started}


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def summary(values: list[float]) -> tuple[float, float]:
    """(median, best) of durations."""
    return statistics.median(values), min(values)


def rate(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e6:,.0f} MB/s"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    import aiohttp

    curl_version = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
    load = os.getloadavg()[0]
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, curl {curl_version}, "
            f"load average at start {load:.1f}")


class BlobRegistry:
    """A docker-registry holding one Ollama model whose weights are ``size`` random bytes."""

    def __init__(self, size: int, scratch: Path) -> None:
        self.size = size
        self.registry = DockerRegistry(scratch / "registry")
        self.scratch = scratch

    def __enter__(self) -> BlobRegistry:
        self.registry.start()
        weights = self.scratch / "weights.bin"
        random_file(weights, self.size)
        self.digest = push_file_model(self.registry, "library/bench", "1", weights)
        weights.unlink()
        return self

    def __exit__(self, *exc: object) -> None:
        self.registry.stop()
        shutil.rmtree(self.registry.workdir, ignore_errors=True)

    def name(self, netloc: str | None = None) -> str:
        """The model's name on this registry, or on a proxy of it at ``netloc``."""
        return f"{netloc or self.registry.host}/library/bench:1"

    def blob_url(self, netloc: str | None = None) -> str:
        return f"http://{netloc or self.registry.host}/v2/library/bench/blobs/{self.digest}"
