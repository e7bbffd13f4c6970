"""The ``modelpull`` command with the new providers: ``--json``, ``--dry-run``, ``-o``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def modelpull(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("modelpull")
    command = [exe] if exe else [sys.executable, "-m", "modelpull.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "MODELPULL_TOKEN", "HF_ENDPOINT")}
    env["HOME"] = str(home)  # never touch the real ~/.lmstudio or HF cache
    env["HF_HUB_CACHE"] = str(home / "hf-cache")
    return subprocess.run([*command, *args], check=False, capture_output=True, text=True, env=env, timeout=120)


def test_pull_gguf_json(hf_front, tiny_gguf, tmp_path):
    run = modelpull("pull", "gguf", f"{tiny_gguf.repo_id}:q4_k_m", "--json",
                    "--base-url", hf_front.endpoint, "--cache-dir", str(tmp_path / "cache"), home=tmp_path)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert events[0]["status"] == "starting" and "Q4_K_M" in events[0]["message"]
    done = events[-1]
    assert done["status"] == "complete"
    assert done["total_bytes"] == done["downloaded_bytes"] == tiny_gguf.size(
        "Tiny-Q4_K_M.gguf", "mmproj-Tiny-F16.gguf")
    assert Path(done["path"]).read_bytes() == tiny_gguf.files["Tiny-Q4_K_M.gguf"]
    assert Path(done["path"]).is_relative_to(tmp_path / "cache")


def test_pull_gguf_dry_run_lists_quantizations(hf_front, tiny_gguf, tmp_path):
    run = modelpull("pull", "gguf", tiny_gguf.repo_id, "--dry-run", "--json",
                    "--base-url", hf_front.endpoint, home=tmp_path)
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert [i["name"] for i in plan["items"]] == ["Tiny-Q4_K_M.gguf", "mmproj-Tiny-F16.gguf"]
    assert plan["notes"][0].startswith("No tag given: chose Q4_K_M")
    assert "Q8_0 50.0 kB" in plan["notes"][-1]
    table = modelpull("pull", "gguf", f"{tiny_gguf.repo_id}:Q8_0", "--dry-run",
                      "--base-url", hf_front.endpoint, home=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "Tiny-Q8_0.gguf" in table.stdout and "Quantizations:" in table.stdout
    assert not (tmp_path / "hf-cache").exists() or not list((tmp_path / "hf-cache").rglob("*.gguf"))


def test_pull_gguf_unknown_tag_fails_with_the_listing(hf_front, tiny_gguf, tmp_path):
    run = modelpull("pull", "gguf", f"{tiny_gguf.repo_id}:Q4_K", "--base-url", hf_front.endpoint,
                    home=tmp_path)
    assert run.returncode == 1
    assert "[not_found]" in run.stderr and "Q4_K_M 32.0 kB" in run.stderr


def test_pull_lmstudio_with_models_dir(hf_front, tiny_gguf, tmp_path):
    models = tmp_path / "lms-models"
    run = modelpull("pull", "lmstudio", f"{tiny_gguf.repo_id}:Q8_0", "-o", f"models_dir={models}",
                    "-o", "mmproj=false", "--base-url", hf_front.endpoint, home=tmp_path)
    assert run.returncode == 0, run.stderr
    target = models / tiny_gguf.repo_id / "Tiny-Q8_0.gguf"
    assert str(target) in run.stdout
    assert target.read_bytes() == tiny_gguf.files["Tiny-Q8_0.gguf"]
    assert sorted(p.name for p in (models / tiny_gguf.repo_id).iterdir()) == ["Tiny-Q8_0.gguf"]
