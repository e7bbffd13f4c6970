"""One timed download in this process, for the benchmarks (prints one JSON line).

    python bench/_run.py modelpull PROVIDER MODEL [-o key=value ...]
    python bench/_run.py hf-snapshot REPO_ID -o endpoint=URL -o cache_dir=DIR

``seconds`` runs from the call to the end of the download (verification and
publishing included), after the imports, so interpreter start-up is left out;
the caller also records the process's wall time and peak RSS.

``MODELPULL_BENCH_NO_FSYNC=1`` turns every ``fsync``/``fdatasync`` of this
process into nothing (before modelpull is imported): the durable-publish bench
measures what the flushes cost. It is read here, by the bench harness only;
modelpull itself has no such setting.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

if os.environ.get("MODELPULL_BENCH_NO_FSYNC") == "1":
    os.fsync = os.fdatasync = lambda fd: None  # bench-only: what the flushes cost


def options(argv: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for i, arg in enumerate(argv):
        if arg == "-o":
            key, _, value = argv[i + 1].partition("=")
            found[key] = value
    return found


async def run_modelpull(provider: str, model: str, opts: dict[str, Any]) -> dict[str, Any]:
    from modelpull import download_model

    base_url = opts.pop("base_url", None)
    started = time.perf_counter()
    last = None
    async for event in download_model(provider, model, base_url=base_url, **opts):
        last = event
    seconds = time.perf_counter() - started
    assert last is not None
    if last.status.value != "complete":
        raise SystemExit(f"modelpull failed: {last.error_code}: {last.message}")
    return {"seconds": seconds, "bytes": last.total_bytes, "path": last.path}


def run_hf_snapshot(repo_id: str, opts: dict[str, Any]) -> dict[str, Any]:
    from huggingface_hub import snapshot_download

    started = time.perf_counter()
    path = snapshot_download(repo_id, endpoint=opts["endpoint"], cache_dir=opts["cache_dir"])
    return {"seconds": time.perf_counter() - started, "path": path}


def main() -> None:
    kind = sys.argv[1]
    opts = options(sys.argv)
    if kind == "modelpull":
        result = asyncio.run(run_modelpull(sys.argv[2], sys.argv[3], opts))
    elif kind == "hf-snapshot":
        result = run_hf_snapshot(sys.argv[2], opts)
    else:
        raise SystemExit(f"unknown runner {kind!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
