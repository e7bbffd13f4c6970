"""Peak memory of ``modelpull pull`` while it downloads 1 GiB: goal < 150 MB RSS, flat as the file grows.

    python bench/bench_memory.py [--quick] [--dest DIR]

Pulls an Ollama model whose weights are 256 MiB and then 1 GiB (``--quick``:
64 and 256 MiB) from a docker-registry on loopback with the ``modelpull``
command, samples the process's resident memory every 20 ms against the
bytes downloaded so far, and prints RSS at each quarter of the download and
the peak (the kernel's high-water mark).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

from _common import BlobRegistry, GiB, MiB, clean_env, machine, remove, settle, workdir


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(source: BlobRegistry, models_dir) -> tuple[int, list[tuple[float, int]]]:
    """(peak RSS, [(fraction downloaded, RSS)]) of one CLI pull."""
    args = [sys.executable, "-m", "modelpull.cli", "pull", "ollama-registry", source.name(),
            "-o", "insecure=true", "-o", f"models_dir={models_dir}", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=clean_env())
    progress = [0.0]
    samples: list[tuple[float, int]] = []

    def read_events() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("total_bytes"):
                progress[0] = (event.get("downloaded_bytes") or 0) / event["total_bytes"]

    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    while True:
        rss = rss_of(proc.pid)
        if rss:
            samples.append((progress[0], rss))
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            break
        time.sleep(0.02)
    reader.join(10)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("the pull failed")
    return usage.ru_maxrss * 1024, samples


def at(samples: list[tuple[float, int]], fraction: float) -> int:
    """RSS of the first sample at or past ``fraction`` of the download."""
    return next((rss for done, rss in samples if done >= fraction), samples[-1][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 and 256 MiB")
    parser.add_argument("--dest", default=None, help="folder on the disk to write to")
    args = parser.parse_args()
    sizes = [64 * MiB, 256 * MiB] if args.quick else [256 * MiB, GiB]
    print(machine())
    rows = []
    for size in sizes:
        scratch = workdir(args.dest)
        with BlobRegistry(size, scratch) as source:
            settle()
            peak, samples = measure(source, scratch / "models")
        remove(scratch)
        quarters = [at(samples, f) for f in (0.25, 0.5, 0.75, 1.0)]
        rows.append((size, peak, quarters))
        print(f"{size / MiB:5.0f} MiB: RSS at 25/50/75/100 %: "
              + " / ".join(f"{q / 1e6:.0f}" for q in quarters)
              + f" MB; peak {peak / 1e6:.0f} MB", flush=True)
    worst = max(peak for _, peak, _ in rows)
    growth = rows[-1][1] - rows[0][1]
    print(f"peak RSS {worst / 1e6:.0f} MB (goal < 150 MB); peak grew {growth / 1e6:+.0f} MB from "
          f"{rows[0][0] / MiB:.0f} MiB to {rows[-1][0] / MiB:.0f} MiB")


if __name__ == "__main__":
    main()
