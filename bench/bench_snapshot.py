"""A Hub snapshot (one 1 GiB file + 200 small files): modelpull vs huggingface_hub's snapshot_download.

    python bench/bench_snapshot.py [--quick] [--rounds N] [--rate BYTES_PER_S] [--dest DIR]

``bench/hub_server.py`` serves the repository from a local folder (fast:
sendfile, Range). Both clients download the whole snapshot into a fresh cache
folder, first on plain loopback (goal: modelpull >= 1.0x snapshot_download's
throughput), then through ``bench/throttle_proxy.py`` capping each connection
at 25 MB/s (goal: >= 4x). ``--quick``: 128 MiB + 200 small files, one round.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

from _common import (
    BENCH,
    GiB,
    MiB,
    hf_snapshot,
    machine,
    modelpull,
    random_file,
    rate,
    remove,
    settle,
    start_listener,
    start_throttle,
    stop,
    summary,
    workdir,
)

REPO = "bench/snapshot"


def make_repo(folder, big: int, small: int) -> int:
    folder.mkdir(parents=True)
    random_file(folder / "model.safetensors", big)
    total = big
    rng = random.Random(7)
    for i in range(small):
        sub = folder / ("tokenizer" if i % 4 == 0 else "extra") 
        sub.mkdir(exist_ok=True)
        data = os.urandom(rng.randint(1_000, 30_000)).hex().encode()[: rng.randint(1_000, 30_000)]
        (sub / f"file_{i:03d}.json").write_bytes(data)
        total += len(data)
    return total


def compare(label: str, endpoint: str, scratch, size: int, rounds: int) -> tuple[float, float]:
    hf_times: list[float] = []
    mp_times: list[float] = []
    for round_ in range(1, rounds + 1):
        settle()
        hf = hf_snapshot(REPO, endpoint, scratch / "hf-cache")
        hf_times.append(hf["seconds"])
        remove(scratch / "hf-cache")
        settle()
        mp = modelpull("huggingface", REPO, base_url=endpoint, cache_dir=str(scratch / "mp-cache"))
        mp_times.append(mp["seconds"])
        remove(scratch / "mp-cache")
        print(f"{label} round {round_}: snapshot_download {hf['seconds']:.2f}s ({rate(size, hf['seconds'])}), "
              f"modelpull {mp['seconds']:.2f}s ({rate(size, mp['seconds'])})", flush=True)
    (hf_med, hf_best), (mp_med, mp_best) = summary(hf_times), summary(mp_times)
    return hf_med / mp_med, hf_best / mp_best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB + 200 small files, one round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--capped-rounds", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="bytes of the big file (default 1 GiB)")
    parser.add_argument("--files", type=int, default=200, help="small files")
    parser.add_argument("--rate", type=float, default=25e6, help="bytes/s per connection when capped")
    parser.add_argument("--dest", default=None, help="folder on the disk to write to")
    args = parser.parse_args()
    size = args.size or (128 * MiB if args.quick else GiB)
    rounds = args.rounds or (1 if args.quick else 3)
    capped_rounds = args.capped_rounds or 1
    print(machine())
    scratch = workdir(args.dest)
    total = make_repo(scratch / "repo", size, args.files)
    server, netloc = start_listener([sys.executable, str(BENCH / "hub_server.py"), "--repo-id", REPO,
                                     "--folder", str(scratch / "repo")])
    try:
        plain = compare("loopback", f"http://{netloc}", scratch, total, rounds)
        proxy, proxied = start_throttle(netloc, args.rate)
        try:
            capped = compare("capped", f"http://{proxied}", scratch, total, capped_rounds)
        finally:
            stop(proxy)
    finally:
        stop(server)
        remove(scratch)
    print(f"snapshot: {size / MiB:.0f} MiB + {args.files} small files = {total / MiB:.1f} MiB")
    print(f"plain loopback: modelpull/snapshot_download throughput median {plain[0]:.2f}x, best {plain[1]:.2f}x (goal >= 1.0x)")
    print(f"capped at {args.rate / 1e6:.0f} MB/s per connection: median {capped[0]:.2f}x, best {capped[1]:.2f}x (goal >= 4x)")


if __name__ == "__main__":
    main()
