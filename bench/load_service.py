"""Load bench of the download service: many SSE watchers on one job plus many jobs at once.

One ``modelpull serve`` process (a subprocess, measured with psutil) serves,
all at the same time:

* one job watched by ``--watchers`` SSE clients (default 200), and
* ``--jobs`` other jobs (default 20), each watched by one NDJSON client.

The jobs pull from the Ollama emulator of the test suite (loopback only), so
the bench measures the service (job tasks, event fan-out, HTTP streaming),
not a disk. Event latency = time a client parsed an event minus the event's
``time`` stamp (set when the service recorded it; same machine, same clock);
events replayed to a client that connected after they were made are not
counted.
CPU is the service process's user+system time over the run divided by wall
time (100 % = one core); RSS is sampled every 0.2 s.

    python bench/load_service.py [--watchers 200] [--jobs 20] [--seconds 12]

Everything stops by itself: each stream ends with its job, and the whole run
is bounded by ``--seconds`` plus a fixed margin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers.ollama_emulator import OllamaEmulator

MB = 1_000_000
#: extra time allowed beyond --seconds before the run is abandoned
MARGIN = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def watch(session: aiohttp.ClientSession, url: str, sse: bool, latencies: list[float],
                counts: list[int], deadline: float) -> str:
    """Read one stream to its end; record each event's latency. Returns the last status."""
    headers = {} if sse else {"Accept": "application/x-ndjson"}
    last = ""
    seen = 0
    async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=deadline - time.time())) as resp:
        resp.raise_for_status()
        connected = time.time()
        async for raw in resp.content:
            line = raw.decode().strip()
            if sse:
                if not line.startswith("data:"):
                    continue
                line = line[5:].strip()
            if not line:
                continue
            event = json.loads(line)
            if event["time"] >= connected:  # replayed events were made before we asked
                latencies.append(time.time() - event["time"])
            last = event["status"]
            seen += 1
    counts.append(seen)
    return last


async def sample(pid: int, stop: asyncio.Event, rss: list[int]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        rss.append(proc.memory_info().rss)
        await asyncio.sleep(0.2)


async def run(api: str, pid: int, emulator: OllamaEmulator, watchers: int, jobs: int, seconds: float) -> dict[str, Any]:
    size = int(5 * MB * seconds)
    emulator.add_model("bench-watched:1b", [size, 1000], bytes_per_sec=5 * MB)
    for i in range(jobs):
        emulator.add_model(f"bench-job{i}:1b", [size, 1000], bytes_per_sec=5 * MB)
    proc = psutil.Process(pid)
    deadline = time.time() + seconds + MARGIN
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        rss: list[int] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(pid, stop, rss))
        idle_cpu = proc.cpu_times()
        await asyncio.sleep(1.0)
        idle = proc.cpu_times()
        idle_percent = 100 * ((idle.user + idle.system) - (idle_cpu.user + idle_cpu.system)) / 1.0
        rss_idle = proc.memory_info().rss

        cpu_before, wall_before = proc.cpu_times(), time.monotonic()

        async def start(model: str) -> str:
            async with session.post(api + "/downloads", json={"provider": "ollama", "model": model}) as resp:
                resp.raise_for_status()
                return str((await resp.json())["id"])

        watched = await start("bench-watched:1b")
        others = await asyncio.gather(*(start(f"bench-job{i}:1b") for i in range(jobs)))
        fan_latency: list[float] = []
        job_latency: list[float] = []
        fan_counts: list[int] = []
        job_counts: list[int] = []
        tasks = [watch(session, f"{api}/downloads/{watched}/events", True, fan_latency, fan_counts, deadline)
                 for _ in range(watchers)]
        tasks += [watch(session, f"{api}/downloads/{job}/events", False, job_latency, job_counts, deadline)
                  for job in others]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        wall = time.monotonic() - wall_before
        cpu_after = proc.cpu_times()
        stop.set()
        await sampler
    failures = [o for o in outcomes if not isinstance(o, str) or o != "complete"]
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {
        "watchers": watchers,
        "jobs": jobs + 1,
        "seconds": round(wall, 1),
        "failed_streams": len(failures),
        "failure_sample": [repr(f)[:200] for f in failures[:3]],
        "events_per_watcher": round(statistics.mean(fan_counts), 1) if fan_counts else 0,
        "events_delivered": len(fan_latency) + len(job_latency),
        "fanout_latency_ms": {"p50": round(1000 * percentile(fan_latency, 50), 1),
                              "p99": round(1000 * percentile(fan_latency, 99), 1),
                              "max": round(1000 * max(fan_latency, default=float("nan")), 1)},
        "jobs_latency_ms": {"p50": round(1000 * percentile(job_latency, 50), 1),
                            "p99": round(1000 * percentile(job_latency, 99), 1),
                            "max": round(1000 * max(job_latency, default=float("nan")), 1)},
        "service_cpu_percent": round(100 * cpu / wall, 1),
        "service_idle_cpu_percent": round(idle_percent, 1),
        "service_rss_mb": {"idle": round(rss_idle / 2**20, 1), "peak": round(max(rss, default=0) / 2**20, 1)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=12.0, help="how long each job's pull takes")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()
    if not (1 <= args.watchers <= 2000 and 0 <= args.jobs <= 200 and 1 <= args.seconds <= 120):
        parser.error("keep --watchers <= 2000, --jobs <= 200, --seconds <= 120")

    emulator = OllamaEmulator()
    emulator.start()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="modelpull-bench-"))
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 - the service writes it while we run
    service = subprocess.Popen(
        [sys.executable, "-c", "from modelpull.cli import main; main()", "serve", "--port", str(port),
         "--ollama-host", emulator.base_url, "--cache-dir", str(workdir / "hf"), "--log-level", "warning",
         "--max-running", str(args.jobs + 5)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
    )
    api = f"http://127.0.0.1:{port}/api/models"
    try:
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if service.poll() is not None:
                    raise SystemExit((workdir / "serve.log").read_text())
                time.sleep(0.1)
        result = asyncio.run(run(api, service.pid, emulator, args.watchers, args.jobs, args.seconds))
    finally:
        service.terminate()
        service.wait(15)
        log.close()
        emulator.stop()
    result["machine"] = f"{psutil.cpu_count()} cores, Python {sys.version.split()[0]}"
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result["failed_streams"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
