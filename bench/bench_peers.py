"""modelpull side by side with curl, aria2c and ``hf download``, each as a whole process, in one run.

    python bench/bench_peers.py                      # every section (about 15 minutes)
    python bench/bench_peers.py --quick              # small files, one round: the script works
    python bench/bench_peers.py --only peers,tail    # some sections

Debian's nginx serves a Hub repository from a folder on tmpfs with sendfile
(``bench/nginx_hub.py``; metadata and the ``HEAD`` that ``hf download`` makes
come from ``bench/hub_server.py`` behind it). ``bench/throttle_proxy.py`` in
front of nginx caps every connection at 25 MB/s, as a CDN edge does. Every
tool runs as a whole process - start-up, metadata, every byte, verification
where the tool does any, writing - timed from ``fork`` to exit; the tools take
turns, in a different order each round, and every output is deleted (and
``sync`` run) before the next run. Printed: one markdown table per section,
medians over the rounds, and ratios (a ratio is the peer's median time over
modelpull's: above 1, modelpull is faster).

Sections:

* ``startup``: ``modelpull --help``, ``hf version``, a bare interpreter; the
  time from process start to the first request for a file's bytes.
* ``peers``: 1 GiB over plain loopback and 256 MiB over the capped link, to
  tmpfs and to disk: modelpull (sha256 verified), ``curl -o`` (with and
  without ``sha256sum``), ``aria2c -x16 -s16`` (with and without
  ``--checksum=sha-256=``), ``hf download``; peak RSS of modelpull.
* ``tail``: 256 MiB over the capped link where one connection (the fourth the
  proxy accepts) gets a twentieth of the others' rate, against the same run
  without it: modelpull and aria2c.
* ``cap``: ``--limit-rate`` at 10 and 50 MB/s: one ``modelpull pull``, and four
  jobs of one ``modelpull serve --limit-rate`` sharing its cap; the rate
  measured from the client's own byte counts, steady part.
* ``dedup``: a GGUF through ``gguf`` (HF cache), then the same through
  ``lmstudio``: bytes nginx sent each time, seconds, disk used (``du``, which
  counts a hard-linked file once).
* ``durable``: the cost of the durable publish (every file flushed before its
  rename, the folder after): 1 GiB, and a snapshot of 200 small files, to disk
  and to tmpfs, with the flushes and with them disabled by the bench harness
  (``MODELPULL_BENCH_NO_FSYNC=1`` read by ``bench/_run.py``, never by modelpull).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import BENCH, MiB, clean_env, machine, random_file, start_listener, stop
from nginx_hub import NginxHub, free_port

REPO = "bench/model"
SNAPSHOT = "bench/snapshot"
CAPPED_RATE = 25e6
SLOW_RATE = CAPPED_RATE / 20
SLOW_CONNECTION = 4
TOOLS = ("modelpull", "curl", "curl && sha256sum", "aria2c -x16", "aria2c -x16 --checksum", "hf download")


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# ------------------------------------------------------------------ processes
@dataclass
class Run:
    wall: float
    rss: int = 0
    out: str = ""


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> Run:
    """One whole process, from fork to exit; its peak RSS from the kernel."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or clean_env())
    out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed ({proc.returncode}): {err.decode(errors='replace')[-1500:]}")
    return Run(wall, 0, out.decode(errors="replace"))


def run_measured(args: list[str], env: dict[str, str] | None = None) -> Run:
    """Like :func:`run`, also the child's peak RSS (``wait4``)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or clean_env())
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else b""), daemon=True)
    reader.start()
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed ({proc.returncode}): {err.decode(errors='replace')[-1500:]}")
    return Run(wall, usage.ru_maxrss * 1024, b"".join(out).decode(errors="replace"))


def settle() -> None:
    os.sync()
    time.sleep(0.5)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------ the tools
@dataclass
class Target:
    """One file on the Hub, reached at ``endpoint`` (nginx, or the capped proxy in front of it)."""

    endpoint: str
    path: str
    size: int
    sha256: str

    @property
    def url(self) -> str:
        from hub_server import COMMIT

        return f"{self.endpoint}/{REPO}/resolve/{COMMIT}/{self.path}"


def modelpull_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelpull.cli", *args]


def tool_run(tool: str, target: Target, dest: Path) -> Run:
    """Run ``tool`` once into the empty folder ``dest``; check what it left; return the run."""
    out = dest / "file.bin"
    env = clean_env()
    if tool == "modelpull":
        result = run_measured(modelpull_cli("pull", "hf", REPO, "--base-url", target.endpoint, "--include",
                                            target.path, "--cache-dir", str(dest / "hf"), "--json"), env)
        last = json.loads(result.out.strip().splitlines()[-1])
        assert last["status"] == "complete", last
        assert Path(last["path"], target.path).stat().st_size == target.size
        return result
    if tool == "curl":
        result = run(["curl", "-sS", "--fail", "-o", str(out), target.url], env)
        assert out.stat().st_size == target.size
        return result
    if tool == "curl && sha256sum":
        result = run(["sh", "-c", 'curl -sS --fail -o "$1" "$2" && sha256sum "$1"', "sh", str(out), target.url], env)
        assert result.out.split()[0] == target.sha256, result.out
        return result
    if tool.startswith("aria2c"):
        args = ["aria2c", "-x16", "-s16", "-q", "--allow-overwrite=true", "--auto-file-renaming=false",
                "-d", str(dest), "-o", out.name, target.url]
        if "--checksum" in tool:
            args.insert(3, f"--checksum=sha-256={target.sha256}")
        result = run(args, env)
        assert out.stat().st_size == target.size
        return result
    if tool == "hf download":
        env = {**env, "HF_ENDPOINT": target.endpoint, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        result = run(["hf", "download", REPO, target.path, "--cache-dir", str(dest / "hf")], env)
        found = [p for p in (dest / "hf").rglob(target.path) if p.is_file()]
        assert len(found) == 1 and found[0].stat().st_size == target.size, found
        return result
    raise ValueError(tool)


def compare(tools: tuple[str, ...], target: Target, dest_root: Path, rounds: int,
            label: str) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {tool: [] for tool in tools}
    for round_ in range(rounds):
        order = tools[round_ % len(tools):] + tools[:round_ % len(tools)]
        for tool in order:
            dest = Path(tempfile.mkdtemp(prefix="run-", dir=dest_root))
            settle()
            try:
                runs[tool].append(tool_run(tool, target, dest))
            finally:
                shutil.rmtree(dest, ignore_errors=True)
        print(f"  {label} round {round_ + 1}: " + ", ".join(
            f"{tool} {runs[tool][-1].wall:.2f}s" for tool in tools), flush=True)
    return runs


def table(title: str, runs: dict[str, list[Run]], size: int, load_seen: str) -> None:
    mp = median([r.wall for r in runs["modelpull"]])
    print(f"\n{title} (load average {load_seen})\n")
    print("| tool | median s | best s | MB/s (median) | modelpull's speed vs it |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for tool, results in runs.items():
        walls = [r.wall for r in results]
        ratio = "—" if tool == "modelpull" else f"{median(walls) / mp:.2f}×"
        print(f"| {tool} | {median(walls):.2f} | {min(walls):.2f} | {size / median(walls) / 1e6:,.0f} | {ratio} |")
    rss = max(r.rss for r in runs["modelpull"])
    print(f"\nmodelpull peak RSS: {rss / 1e6:.0f} MB", flush=True)


# ------------------------------------------------------------------ the Hub
@dataclass
class Bench:
    args: argparse.Namespace
    source: Path  # tmpfs: the served files
    disk: Path
    tmpfs: Path
    files: dict[str, tuple[int, str]] = field(default_factory=dict)  # path -> (size, sha256)

    def add(self, path: str, size: int) -> None:
        digest = random_file(self.source / path, size).split(":")[1]
        self.files[path] = (size, digest)

    def target(self, endpoint: str, path: str) -> Target:
        size, digest = self.files[path]
        return Target(endpoint, path, size, digest)


def throttle(upstream: str, **slow: Any) -> tuple[subprocess.Popen[str], str]:
    args = [sys.executable, str(BENCH / "throttle_proxy.py"), "--upstream", upstream, "--rate", str(CAPPED_RATE)]
    if slow:
        args += ["--slow", str(slow["connection"]), "--slow-rate", str(slow["rate"])]
    return start_listener(args)


# ------------------------------------------------------------------ sections
def section_startup(bench: Bench, hub: NginxHub) -> None:
    print(f"\n## start-up (load average {load()})\n")
    rows = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "modelpull --help": modelpull_cli("--help"),
        "hf version": ["hf", "version"],
    }
    print("| command | median s | best s |")
    print("| --- | ---: | ---: |")
    for name, args in rows.items():
        walls = [run(args).wall for _ in range(7)]
        print(f"| {name} | {median(walls):.3f} | {min(walls):.3f} |", flush=True)
    # from process start to nginx seeing the request for the file's bytes
    firsts = []
    for _ in range(5):
        dest = Path(tempfile.mkdtemp(prefix="run-", dir=bench.tmpfs))
        hub.clear_log()
        started = time.time()
        run(modelpull_cli("pull", "hf", REPO, "--base-url", hub.endpoint, "--include", "small.bin",
                          "--cache-dir", str(dest), "--json"))
        body = [e for e in hub.served() if e.method == "GET" and e.path.endswith("/small.bin")]
        firsts.append(body[0].started - started)
        shutil.rmtree(dest, ignore_errors=True)
    print(f"\nfirst request for a file's bytes, from process start: median {median(firsts):.3f} s, "
          f"best {min(firsts):.3f} s (goal 0.25 s)", flush=True)


def section_peers(bench: Bench, hub: NginxHub) -> None:
    big, capped = bench.args.size, bench.args.capped_size
    for dest_name, dest in (("tmpfs", bench.tmpfs), ("disk", bench.disk)):
        seen = load()
        runs = compare(TOOLS, bench.target(hub.endpoint, "model.safetensors"), dest, bench.args.rounds,
                       f"loopback, {dest_name}")
        table(f"## {big / MiB:.0f} MiB over loopback, to {dest_name}", runs, big, f"{seen} → {load()}")
        proxy, netloc = throttle(hub.netloc)
        try:
            seen = load()
            runs = compare(TOOLS, bench.target(f"http://{netloc}", "capped.bin"), dest, bench.args.capped_rounds,
                           f"capped, {dest_name}")
            table(f"## {capped / MiB:.0f} MiB at {CAPPED_RATE / 1e6:.0f} MB/s per connection, to {dest_name}",
                  runs, capped, f"{seen} → {load()}")
        finally:
            stop(proxy)


def section_tail(bench: Bench, hub: NginxHub) -> None:
    seen = load()
    tools = ("modelpull", "aria2c -x16")
    results: dict[tuple[str, bool], list[float]] = {(t, s): [] for t in tools for s in (False, True)}
    for round_ in range(bench.args.capped_rounds):
        for slow in (False, True) if round_ % 2 == 0 else (True, False):
            for tool in tools if round_ % 2 == 0 else tools[::-1]:
                # a fresh proxy: the slow one is the fourth connection of this run
                proxy, netloc = throttle(hub.netloc, **({"connection": SLOW_CONNECTION, "rate": SLOW_RATE}
                                                        if slow else {}))
                dest = Path(tempfile.mkdtemp(prefix="run-", dir=bench.tmpfs))
                try:
                    settle()
                    results[(tool, slow)].append(
                        tool_run(tool, bench.target(f"http://{netloc}", "capped.bin"), dest).wall)
                finally:
                    stop(proxy)
                    shutil.rmtree(dest, ignore_errors=True)
        print("  tail round {}: {}".format(round_ + 1, ", ".join(
            f"{t}{' slow' if s else ''} {v[-1]:.2f}s" for (t, s), v in results.items())), flush=True)
    size = bench.args.capped_size
    print(f"\n## the slow tail: {size / MiB:.0f} MiB at {CAPPED_RATE / 1e6:.0f} MB/s per connection, connection "
          f"{SLOW_CONNECTION} at {SLOW_RATE / 1e6:.2f} MB/s (load average {seen} → {load()})\n")
    print("| tool | without the slow connection, s | with it, s | with / without |")
    print("| --- | ---: | ---: | ---: |")
    for tool in tools:
        fast, slow_ = median(results[(tool, False)]), median(results[(tool, True)])
        print(f"| {tool} | {fast:.2f} | {slow_:.2f} | {slow_ / fast:.2f}× |", flush=True)


def _rate_from_events(lines: list[tuple[float, dict[str, Any]]], skip: float = 1.0) -> float:
    """Bytes/s over the steady part of a pull: from ``skip`` s after bytes start to the last progress event."""
    moving = [(t, e["downloaded_bytes"]) for t, e in lines
              if e.get("status") == "downloading" and e.get("downloaded_bytes")]
    start = moving[0][0] + skip
    steady = [(t, b) for t, b in moving if t >= start]
    (t0, b0), (t1, b1) = steady[0], steady[-1]
    return (b1 - b0) / (t1 - t0)


def section_cap(bench: Bench, hub: NginxHub) -> None:
    seen = load()
    rows = []
    for cap in (10e6, 50e6):
        tag = f"{cap / 1e6:.0f}"
        dest = Path(tempfile.mkdtemp(prefix="run-", dir=bench.tmpfs))
        args = modelpull_cli("pull", "hf", REPO, "--base-url", hub.endpoint, "--include", f"cap{tag}-single.bin",
                             "--cache-dir", str(dest), "--limit-rate", f"{tag}M", "--json")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=clean_env())
        lines: list[tuple[float, dict[str, Any]]] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic(), json.loads(line)))
        assert proc.wait() == 0 and lines[-1][1]["status"] == "complete", lines[-1]
        shutil.rmtree(dest, ignore_errors=True)
        rows.append((f"{tag} MB/s", "1 job (`modelpull pull --limit-rate`)", _rate_from_events(lines), cap))
        rows.append((f"{tag} MB/s", "4 jobs, one `modelpull serve --limit-rate`", _service_rate(bench, hub, cap), cap))
        print(f"  cap {tag} MB/s: " + ", ".join(f"{r[2] / 1e6:.2f} MB/s" for r in rows[-2:]), flush=True)
    print(f"\n## the bandwidth cap (load average {seen} → {load()})\n")
    print("| cap | downloads | measured | measured / cap |")
    print("| --- | --- | ---: | ---: |")
    for cap_text, what, rate, cap in rows:
        print(f"| {cap_text} | {what} | {rate / 1e6:.2f} MB/s | {rate / cap:.3f} |", flush=True)


def _service_rate(bench: Bench, hub: NginxHub, cap: float) -> float:
    tag = f"{cap / 1e6:.0f}"
    port = free_port()
    dest = Path(tempfile.mkdtemp(prefix="serve-", dir=bench.tmpfs))
    log = open(dest / "serve.log", "wb")  # noqa: SIM115 - the child's
    env = {**clean_env(), "MODELPULL_DATA_DIR": str(dest / "data")}
    proc = subprocess.Popen(
        modelpull_cli("serve", "--port", str(port), "--limit-rate", f"{tag}M", "--hf-endpoint", hub.endpoint,
                      "--cache-dir", str(dest / "hf"), "--log-level", "warning"),
        stdout=log, stderr=subprocess.STDOUT, env=env)
    api = f"http://127.0.0.1:{port}/api/models"
    try:
        _wait_for(lambda: _http("GET", f"{api}/providers")[0] == 200)
        ids = []
        for i in range(4):
            status, body = _http("POST", f"{api}/downloads", {
                "provider": "huggingface", "model": REPO, "options": {"allow_patterns": [f"cap{tag}-{i}.bin"]}})
            assert status == 201, body
            ids.append(body["id"])
        samples: list[tuple[float, list[int], list[str]]] = []
        while True:
            views = [_http("GET", f"{api}/downloads/{job}")[1] for job in ids]
            samples.append((time.monotonic(), [int((v.get("progress") or {}).get("downloaded_bytes") or 0)
                                               for v in views], [v["state"] for v in views]))
            if all(state != "running" for state in samples[-1][2]):
                break
            time.sleep(0.2)
        assert all(state == "complete" for state in samples[-1][2]), samples[-1]
        # while all four run: from the moment each has bytes, plus a second, to the first one's end
        size = bench.files[f"cap{tag}-0.bin"][0]
        moving = [(t, sum(done)) for t, done, _ in samples if all(d > 0 for d in done) and all(d < size for d in done)]
        start = moving[0][0] + 1.0
        steady = [(t, b) for t, b in moving if t >= start]
        (t0, b0), (t1, b1) = steady[0], steady[-1]
        return (b1 - b0) / (t1 - t0)
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        shutil.rmtree(dest, ignore_errors=True)


def _http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _wait_for(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("timed out")


def section_dedup(bench: Bench, hub: NginxHub) -> None:
    seen = load()
    root = Path(tempfile.mkdtemp(prefix="dedup-", dir=bench.disk))
    env = {**clean_env(), "HF_HUB_CACHE": str(root / "hf"), "HOME": str(root / "home"),
           "OLLAMA_MODELS": str(root / "ollama")}
    gguf = "model-Q4_K_M.gguf"
    size = bench.files[gguf][0]
    rows = []
    try:
        for provider, extra in (("gguf", []), ("lmstudio", ["-o", f"models_dir={root / 'lmstudio'}"])):
            hub.clear_log()
            settle()
            result = run(modelpull_cli("pull", provider, f"{REPO}:Q4_K_M", "--base-url", hub.endpoint, "--json",
                                       "-o", "mmproj=false", *extra), env)
            assert json.loads(result.out.strip().splitlines()[-1])["status"] == "complete"
            fetched = sum(e.body_bytes for e in hub.served() if e.method == "GET" and e.path.endswith("/" + gguf))
            rows.append((provider, result.wall, fetched))
        du = subprocess.run(["du", "-s", "--block-size=1", str(root / "hf"), str(root / "lmstudio")],
                            capture_output=True, text=True, check=True).stdout
        used = sum(int(line.split()[0]) for line in du.splitlines())  # a hard-linked file counts once
        both = [p for p in (root / "hf").rglob(gguf) if p.is_file()] + [root / "lmstudio" / REPO / gguf]
        inodes = {os.stat(p).st_ino for p in both}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n## one copy on disk: a {size / MiB:.0f} MiB GGUF through `gguf`, then `lmstudio` "
          f"(to disk; load average {seen} → {load()})\n")
    print("| pull | seconds | bytes of the GGUF sent by nginx |")
    print("| --- | ---: | ---: |")
    for provider, wall, fetched in rows:
        print(f"| `modelpull pull {provider}` | {wall:.2f} | {fetched:,} |")
    print(f"\ndisk used by both stores (du, hard links counted once): {used / MiB:.1f} MiB for "
          f"{2 * size / MiB:.0f} MiB of files; the two names share {len(inodes) == 1 and 'one inode' or 'no inode'}",
          flush=True)


def section_durable(bench: Bench, hub: NginxHub, snapshot: NginxHub) -> None:
    seen = load()
    cases = (("1 GiB, one file", hub, ["-o", "allow_patterns=model.safetensors"], REPO),
             ("200 small files", snapshot, [], SNAPSHOT))
    rows = []
    for dest_name, dest_root in (("disk", bench.disk), ("tmpfs", bench.tmpfs)):
        for label, server, extra, repo in cases:
            walls: dict[bool, list[float]] = {True: [], False: []}
            for round_ in range(bench.args.durable_rounds):
                for flush in (True, False) if round_ % 2 == 0 else (False, True):
                    dest = Path(tempfile.mkdtemp(prefix="run-", dir=dest_root))
                    env = clean_env()
                    if not flush:
                        env["MODELPULL_BENCH_NO_FSYNC"] = "1"
                    settle()
                    try:
                        walls[flush].append(run([sys.executable, str(BENCH / "_run.py"), "modelpull", "huggingface",
                                                 repo, "-o", f"base_url={server.endpoint}",
                                                 "-o", f"cache_dir={dest}", *extra], env).wall)
                    finally:
                        shutil.rmtree(dest, ignore_errors=True)
            rows.append((label, dest_name, median(walls[True]), median(walls[False])))
            print(f"  durable {label} to {dest_name}: {rows[-1][2]:.2f}s with flushes, {rows[-1][3]:.2f}s without",
                  flush=True)
    print(f"\n## the durable publish (load average {seen} → {load()})\n")
    print("| download | to | with the flushes, s | without, s | cost |")
    print("| --- | --- | ---: | ---: | ---: |")
    for label, dest_name, with_, without in rows:
        print(f"| {label} | {dest_name} | {with_:.2f} | {without:.2f} | {100 * (with_ / without - 1):+.1f} % |")


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small files, one round")
    parser.add_argument("--only", default="startup,peers,tail,cap,dedup,durable")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over loopback (default 5)")
    parser.add_argument("--capped-rounds", type=int, default=None, help="rounds of the other sections (default 3)")
    parser.add_argument("--durable-rounds", type=int, default=None, help="rounds of the durable section (default 5)")
    parser.add_argument("--size", type=int, default=None, help="bytes of the loopback file (default 1 GiB)")
    parser.add_argument("--capped-size", type=int, default=None, help="bytes over the capped link (default 256 MiB)")
    parser.add_argument("--disk", default=None, help="a folder on the disk (default: the temp dir)")
    parser.add_argument("--tmpfs", default="/dev/shm", help="a folder on tmpfs (default /dev/shm)")
    args = parser.parse_args()
    args.size = args.size or (64 * MiB if args.quick else 1024 * MiB)
    args.capped_size = args.capped_size or (32 * MiB if args.quick else 256 * MiB)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.capped_rounds = args.capped_rounds or (1 if args.quick else 3)
    args.durable_rounds = args.durable_rounds or (1 if args.quick else 5)
    sections = args.only.split(",")
    for tool in ("nginx", "curl", "aria2c", "hf", "sha256sum", "du"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (apt-get install -y nginx aria2; pip install huggingface_hub)")
    print(machine())
    print(f"aria2c {subprocess.run(['aria2c', '--version'], capture_output=True, text=True, check=True).stdout.split()[2]}, "
          f"nginx {subprocess.run(['nginx', '-v'], capture_output=True, text=True, check=True).stderr.split('/')[-1].strip()}, "
          f"{subprocess.run(['hf', 'version'], capture_output=True, text=True, check=True).stdout.strip()}")
    scratch = Path(tempfile.mkdtemp(prefix="modelpull-peers-", dir=args.tmpfs))
    bench = Bench(args, scratch / "repo", Path(tempfile.mkdtemp(prefix="modelpull-peers-", dir=args.disk)),
                  Path(tempfile.mkdtemp(prefix="out-", dir=scratch)))
    bench.source.mkdir()
    try:
        bench.add("model.safetensors", args.size)
        bench.add("capped.bin", args.capped_size)
        bench.add("small.bin", 1_000_000)
        bench.add("model-Q4_K_M.gguf", 32 * MiB if args.quick else 256 * MiB)
        for cap in (10, 50):
            seconds = 2 if args.quick else 8
            bench.add(f"cap{cap}-single.bin", cap * 1_000_000 * seconds)
            for i in range(4):
                bench.add(f"cap{cap}-{i}.bin", cap * 1_000_000 * seconds // 4)
        snapshot_folder = scratch / "snapshot"
        snapshot_folder.mkdir()
        rng = random.Random(7)
        for i in range(200):
            sub = snapshot_folder / ("tokenizer" if i % 4 == 0 else "extra")
            sub.mkdir(exist_ok=True)
            (sub / f"file_{i:03d}.json").write_bytes(os.urandom(rng.randint(1_000, 30_000)))
        print(f"files ready: {sum(s for s, _ in bench.files.values()) / MiB:,.0f} MiB on tmpfs; load {load()}",
              flush=True)
        with NginxHub(REPO, bench.source, scratch, log=True) as hub, \
                NginxHub(SNAPSHOT, snapshot_folder, scratch / "snap") as snapshot:
            if "startup" in sections:
                section_startup(bench, hub)
            if "peers" in sections:
                section_peers(bench, hub)
            if "tail" in sections:
                section_tail(bench, hub)
            if "cap" in sections:
                section_cap(bench, hub)
            if "dedup" in sections:
                section_dedup(bench, hub)
            if "durable" in sections:
                section_durable(bench, hub, snapshot)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(bench.disk, ignore_errors=True)


if __name__ == "__main__":
    main()
