"""A registry pull killed half-way leaves a partial that is listed with its model (and resumed by pulling again)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from modelpull.inventory import list_partials
from tests.servers.registry import RegistryFront

SIZE = 3_000_000


def test_a_killed_registry_pull_is_listed_with_its_model(registry, tmp_path):
    model = registry.push_tiny(weights=SIZE)
    models_dir = tmp_path / "ollama"
    with RegistryFront(registry.url, rate=500_000) as front:
        name = f"{front.netloc}/{model.repo}:{model.tag}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelpull.cli", "pull", "ollama-registry", name, "-o", "insecure=true",
             "-o", f"models_dir={models_dir}", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if (json.loads(line).get("downloaded_bytes") or 0) > 600_000:
                    break
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(10)
    partials = list_partials("ollama-registry", ollama_models_dir=str(models_dir))
    weights = [p for p in partials if p.total_bytes == SIZE]
    assert weights, partials
    assert weights[0].model.endswith(f"{model.repo.split('/')[-1]}:{model.tag}")
    assert weights[0].file.startswith("model ") and 0 < weights[0].present_bytes < SIZE
