"""The README's code blocks marked runnable run as pasted.

A block is runnable when the line before its opening fence is ``<!-- runnable -->``
(invisible on GitHub). ``python`` blocks run with ``python -c``; ``bash``/``sh``
blocks run with ``bash -e``. They run in a fresh process whose environment points
every default at loopback servers and temporary folders: ``HF_ENDPOINT`` at the
Hub front over olah (where the repos the README names are created first),
``OLLAMA_HOST`` at the Ollama emulator, ``HOME`` and the caches at a temporary
folder. Nothing reaches the internet or the user's own caches.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- runnable -->"
#: the repos the runnable blocks name, created on the test mirror before they run
HUB_REPOS = ("Qwen/Qwen2.5-0.5B-Instruct",)


@dataclass
class Block:
    line: int
    language: str
    code: str

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def runnable_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[index + 1] if index + 1 < len(lines) else ""
        assert fence.startswith("```"), f"README.md:{index + 1}: {MARKER} must be followed by a code block"
        end = next(i for i in range(index + 2, len(lines)) if lines[i].startswith("```"))
        blocks.append(Block(index + 2, fence[3:].strip(), "\n".join(lines[index + 2:end]) + "\n"))
    return blocks


BLOCKS = runnable_blocks(README.read_text(encoding="utf-8"))


def test_the_first_example_is_marked_runnable():
    text = README.read_text(encoding="utf-8")
    first = re.search(r"^```python\n", text, re.MULTILINE)
    assert first is not None and BLOCKS, "no runnable block"
    assert BLOCKS[0].line == text[: first.start()].count("\n") + 1, "the README's first example is not runnable"
    assert {b.language for b in BLOCKS} >= {"python", "bash"}


@pytest.fixture
def environment(tmp_path, olah, hf_front, ollama_emulator) -> dict[str, str]:
    for repo_id in HUB_REPOS:
        olah.make_repo(repo_id, {"config.json": b'{"model_type": "qwen2"}',
                                 "generation_config.json": b'{"do_sample": true}',
                                 "model.safetensors": os.urandom(400_000)})
    ollama_emulator.add_model("gemma3:1b", [200_000, 100], bytes_per_sec=20_000_000)
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("HF_", "HUGGINGFACE_", "OLLAMA_", "MODELPULL_"))}
    env.update({
        "HOME": str(home),
        "HF_HOME": str(home / ".cache" / "huggingface"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "HF_ENDPOINT": hf_front.endpoint,
        "OLLAMA_HOST": ollama_emulator.base_url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        # this interpreter's scripts first (``modelpull``), without a shim that reads HOME
        "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
    })
    return env


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_runnable_block_runs_as_pasted(block: Block, environment: dict[str, str], tmp_path: Path, hf_front):
    if block.language == "python":
        command = [sys.executable, "-c", block.code]
    elif block.language in ("bash", "sh", "shell"):
        command = ["bash", "-e", "-c", block.code]
    else:
        pytest.fail(f"{block}: cannot run a {block.language!r} block")
    out = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=environment)
    assert out.returncode == 0, f"{block} failed:\n{block.code}\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}"
    assert "Traceback" not in out.stderr
    if "download_model(" in block.code or "modelpull pull" in block.code:
        # it downloaded from the loopback mirror, never from the internet
        assert hf_front.requests(method="GET", path_contains="/resolve/") or "ollama" in block.code
        assert "complete" in out.stdout.lower() or "Downloaded" in out.stdout or "already" in out.stdout
