"""The same 1 GiB behind a proxy that caps each connection at 25 MB/s: modelpull vs one stream.

    python bench/bench_throttled.py [--quick] [--rounds N] [--rate BYTES_PER_S] [--dest DIR]

A docker-registry on 127.0.0.1 serves one Ollama model with a 1 GiB weights
blob; ``bench/throttle_proxy.py`` in front of it paces every connection to
25 MB/s, like a CDN edge that limits each connection. Each round downloads
the blob as one stream (``curl -o`` through the proxy) and pulls the model
with modelpull's default policy through the same proxy. Prints modelpull's
throughput as a multiple of the single stream's (goal: >= 4). ``--quick``
uses 128 MiB and one round.
"""

from __future__ import annotations

import argparse

from _common import (
    BlobRegistry,
    GiB,
    MiB,
    curl,
    machine,
    modelpull,
    rate,
    remove,
    settle,
    start_throttle,
    stop,
    summary,
    workdir,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB, one round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="bytes (default 1 GiB)")
    parser.add_argument("--rate", type=float, default=25e6, help="bytes/s per connection")
    parser.add_argument("--dest", default=None, help="folder on the disk to write to")
    args = parser.parse_args()
    size = args.size or (128 * MiB if args.quick else GiB)
    rounds = args.rounds or (1 if args.quick else 3)
    print(machine())
    scratch = workdir(args.dest)
    single: list[float] = []
    parallel: list[float] = []
    with BlobRegistry(size, scratch) as source:
        proxy, netloc = start_throttle(source.registry.host, args.rate)
        try:
            for round_ in range(1, rounds + 1):
                settle()
                got = curl(source.blob_url(netloc), scratch / "curl.bin")
                assert got["bytes"] == size
                single.append(got["seconds"])
                remove(scratch / "curl.bin")
                settle()
                pulled = modelpull("ollama-registry", source.name(netloc), insecure="true",
                                   models_dir=str(scratch / "models"))
                parallel.append(pulled["seconds"])
                remove(scratch / "models")
                print(f"round {round_}: one stream {got['seconds']:.2f}s ({rate(size, got['seconds'])}), "
                      f"modelpull {pulled['seconds']:.2f}s ({rate(size, pulled['seconds'])})", flush=True)
        finally:
            stop(proxy)
    remove(scratch)
    (one_med, one_best), (mp_med, mp_best) = summary(single), summary(parallel)
    print(f"size {size / MiB:.0f} MiB, cap {args.rate / 1e6:.0f} MB/s per connection, {rounds} rounds")
    print(f"one stream (curl -o): median {one_med:.2f}s = {rate(size, one_med)}")
    print(f"modelpull:            median {mp_med:.2f}s = {rate(size, mp_med)}, best {mp_best:.2f}s = {rate(size, mp_best)}")
    print(f"ratio modelpull/one stream: median {one_med / mp_med:.2f}x, best {one_best / mp_best:.2f}x (goal >= 4x)")


if __name__ == "__main__":
    main()
