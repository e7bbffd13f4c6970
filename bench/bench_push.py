"""Push a 1 GiB model to a local registry with modelpull, beside ``skopeo copy`` of the same content.

Both push the same artifact (a ModelPack of one 1 GiB weights file, a small
config) to Debian's docker-registry on loopback, each into a fresh registry
(its storage emptied between pushes, so neither finds a blob already there):

* modelpull: ``modelpull push ollama-registry big oci://…`` from an Ollama
  store (the weights' digest is known, the registry checks it);
* skopeo: ``skopeo copy oci:<layout>:big docker://…`` from an OCI layout
  holding the very artifact modelpull pushes (written by ``modelpull push``
  to ``oci-layout:`` first), so the bytes and the manifest are the same.

Rounds alternate which tool goes first. The ratio is skopeo's time over
modelpull's (above 1: modelpull is faster). Run it when the machine is quiet:
the load average is printed first.

    python bench/bench_push.py              # 1 GiB, 3 rounds
    python bench/bench_push.py --size 256 --rounds 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers.registry import DockerRegistry  # noqa: E402

MIB = 1 << 20


def make_ollama_store(root: Path, size: int) -> str:
    """An Ollama store holding one model whose weights are ``size`` random bytes; its digest."""
    hasher = hashlib.sha256()
    tmp = root / "weights.tmp"
    root.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(16 * MIB, left))
            hasher.update(block)
            out.write(block)
            left -= len(block)
    digest = "sha256:" + hasher.hexdigest()
    blobs = root / "blobs"
    blobs.mkdir(exist_ok=True)
    os.rename(tmp, blobs / digest.replace(":", "-"))
    config = json.dumps({"model_format": "gguf", "file_type": "Q4_0"}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (blobs / config_digest.replace(":", "-")).write_bytes(config)
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": size}],
    }
    path = root / "manifests" / "registry.ollama.ai" / "library" / "big" / "latest"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    return digest


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="MiB of weights (default 1024)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    size = args.size * MIB
    with tempfile.TemporaryDirectory(prefix="bench-push-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        models = work / "ollama"
        make_ollama_store(models, size)
        modelpull = [sys.executable, "-m", "modelpull.cli", "push", "ollama-registry", "big"]
        common = ["-o", f"models_dir={models}", "-o", "offline=true", "-o", f"state_dir={work / 'state'}"]
        layout = work / "layout"
        timed([*modelpull, f"oci-layout:{layout}:big", *common])
        results: dict[str, list[float]] = {"modelpull": [], "skopeo": []}
        for round_ in range(args.rounds):
            order = ["modelpull", "skopeo"] if round_ % 2 == 0 else ["skopeo", "modelpull"]
            for tool in order:
                data = work / "registry"
                shutil.rmtree(data, ignore_errors=True)
                with DockerRegistry(data) as registry:
                    if tool == "modelpull":
                        seconds = timed([*modelpull, f"oci://{registry.host}/bench/big:v1", "--insecure", *common])
                    else:
                        seconds = timed(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:big",
                                         f"docker://{registry.host}/bench/big:v1"])
                results[tool].append(seconds)
                print(f"round {round_ + 1}: {tool:9s} {seconds:6.2f} s = {size / seconds / 1e6:7.1f} MB/s", flush=True)
        mp, sk = statistics.median(results["modelpull"]), statistics.median(results["skopeo"])
        print(f"median: modelpull {mp:.2f} s ({size / mp / 1e6:.0f} MB/s), skopeo {sk:.2f} s "
              f"({size / sk / 1e6:.0f} MB/s); ratio skopeo/modelpull = {sk / mp:.2f}x")
        print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
