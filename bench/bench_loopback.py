"""1 GiB over plain loopback: modelpull (verification included) against ``curl -o``.

    python bench/bench_loopback.py [--quick] [--rounds N] [--dest DIR]

A docker-registry on 127.0.0.1 serves one Ollama model with a 1 GiB weights
blob. Each round runs, in turn, ``curl -o`` of the blob and a modelpull pull of
the model into a fresh Ollama store (every blob fetched, sha256-verified and
published). Both write into ``--dest`` (default: the temp dir); each run's
file is deleted and the page cache flushed (``sync``) before the next. Prints each
run, the medians, the best runs, and modelpull's throughput as a multiple of
curl's (goal: >= 0.9). ``--quick`` uses 256 MiB and one round.
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
    summary,
    workdir,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB, one round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="bytes (default 1 GiB)")
    parser.add_argument("--dest", default=None, help="folder on the disk to write to")
    args = parser.parse_args()
    size = args.size or (256 * MiB if args.quick else GiB)
    rounds = args.rounds or (1 if args.quick else 5)
    print(machine())
    scratch = workdir(args.dest)
    curl_times: list[float] = []
    pull_times: list[float] = []
    with BlobRegistry(size, scratch) as source:
        for round_ in range(1, rounds + 1):
            settle()
            got = curl(source.blob_url(), scratch / "curl.bin")
            assert got["bytes"] == size
            curl_times.append(got["seconds"])
            remove(scratch / "curl.bin")
            settle()
            pulled = modelpull("ollama-registry", source.name(), insecure="true",
                               models_dir=str(scratch / "models"))
            pull_times.append(pulled["seconds"])
            remove(scratch / "models")
            print(f"round {round_}: curl {got['seconds']:.2f}s ({rate(size, got['seconds'])}), "
                  f"modelpull {pulled['seconds']:.2f}s ({rate(size, pulled['seconds'])}; "
                  f"process {pulled['wall']:.2f}s)", flush=True)
    remove(scratch)
    (curl_med, curl_best), (pull_med, pull_best) = summary(curl_times), summary(pull_times)
    print(f"size {size / MiB:.0f} MiB, {rounds} rounds")
    print(f"curl -o:   median {curl_med:.2f}s = {rate(size, curl_med)}, best {curl_best:.2f}s = {rate(size, curl_best)}")
    print(f"modelpull: median {pull_med:.2f}s = {rate(size, pull_med)}, best {pull_best:.2f}s = {rate(size, pull_best)}")
    print(f"ratio modelpull/curl throughput: median {curl_med / pull_med:.2f}x, best {curl_best / pull_best:.2f}x "
          "(goal >= 0.9x)")


if __name__ == "__main__":
    main()
