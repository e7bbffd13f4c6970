"""GGUF repos on the test Hub (olah), made once per session.

The files are fake but shaped like real ones: the GGUF magic and version 3,
then pseudo-random bytes, named the way llama.cpp / bartowski / unsloth name
their uploads.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import pytest

ORG = "modelpull-gguf"


def fake_gguf(size: int, seed: int) -> bytes:
    header = b"GGUF" + struct.pack("<I", 3)
    return header + random.Random(seed).randbytes(size - len(header))


@dataclass
class GgufRepo:
    repo_id: str
    files: dict[str, bytes]
    #: the parts of the split model, in order
    split: list[str] = field(default_factory=list)

    def size(self, *paths: str) -> int:
        return sum(len(self.files[p]) for p in paths)


def _make(olah, name: str, sizes: dict[str, int], extra: dict[str, bytes] | None = None,
          split: list[str] | None = None) -> GgufRepo:
    files = {path: fake_gguf(size, seed) for seed, (path, size) in enumerate(sorted(sizes.items()))}
    files.update(extra or {})
    repo_id = f"{ORG}/{name}"
    olah.make_repo(repo_id, files)
    return GgufRepo(repo_id, files, list(split or []))


SPLIT = [f"F16/Tiny-F16-0000{n}-of-00003.gguf" for n in (1, 2, 3)]


@pytest.fixture(scope="session")
def tiny_gguf(olah) -> GgufRepo:
    """Several quantizations, a split F16 model in a folder, two projectors."""
    return _make(olah, "Tiny-GGUF", {
        "Tiny-Q2_K.gguf": 21_000,
        "Tiny-Q4_K_S.gguf": 30_000,
        "Tiny-Q4_K_M.gguf": 32_000,
        "Tiny-IQ4_XS.gguf": 28_000,
        "Tiny-Q8_0.gguf": 50_000,
        "Tiny-BF16.gguf": 90_000,
        SPLIT[0]: 40_000,
        SPLIT[1]: 40_000,
        SPLIT[2]: 17_000,
        "mmproj-Tiny-F16.gguf": 12_000,
        "mmproj-Tiny-BF16.gguf": 12_500,
    }, {"README.md": b"# Tiny GGUF\n", "params.json": b"{}"}, split=SPLIT)


@pytest.fixture(scope="session")
def big_split(olah) -> GgufRepo:
    """A split model big enough to cancel half-way through when throttled."""
    parts = [f"Big-Q8_0-0000{n}-of-00003.gguf" for n in (1, 2, 3)]
    return _make(olah, "Big-Split-GGUF", dict.fromkeys(parts, 120_000), split=parts)


@pytest.fixture(scope="session")
def fallback_repos(olah) -> dict[str, GgufRepo]:
    """Repos without Q4_K_M, for the no-tag rule's later steps."""
    return {
        "nearest-4bit": _make(olah, "No-Q4KM-GGUF", {
            "m.Q8_0.gguf": 9_000, "m.Q4_0.gguf": 5_000, "m.Q4_K_S.gguf": 5_200, "m.IQ4_XS.gguf": 4_800,
        }),
        "smallest-above": _make(olah, "No-4bit-GGUF", {
            "m-Q8_0.gguf": 9_000, "m-Q5_K_M.gguf": 6_000, "m-Q6_K.gguf": 7_000, "m-Q3_K_M.gguf": 4_000,
        }),
        "largest-below": _make(olah, "Low-bit-GGUF", {
            "m-IQ2_XXS.gguf": 2_500, "m-Q3_K_S.gguf": 3_500, "m-Q2_K.gguf": 3_000,
        }),
    }


@pytest.fixture(scope="session")
def mlx_repo(olah) -> GgufRepo:
    files = {
        "config.json": b'{"model_type": "llama", "quantization": {"bits": 4, "group_size": 64}}',
        "model.safetensors": fake_gguf(20_000, 99),
        "tokenizer.json": b'{"version": "1.0"}',
        "tokenizer_config.json": b"{}",
        "README.md": b"# an MLX model\n",
        "original/weights.pt": b"not for mlx",
    }
    olah.make_repo(f"{ORG}/Tiny-4bit-mlx", files)
    return GgufRepo(f"{ORG}/Tiny-4bit-mlx", files)


@pytest.fixture(scope="session")
def safetensors_only(olah) -> GgufRepo:
    files = {"config.json": b"{}", "model.safetensors": fake_gguf(5_000, 7)}
    olah.make_repo(f"{ORG}/Plain-Safetensors", files)
    return GgufRepo(f"{ORG}/Plain-Safetensors", files)


@pytest.fixture(scope="session")
def odd_repos(olah) -> dict[str, GgufRepo]:
    """Repos that break the usual shape: one label twice, a split missing a part, no label."""
    return {
        "twice": _make(olah, "Odd-GGUF", {
            "v1/Odd-Q4_K_M.gguf": 3_000, "v2/Odd-Q4_K_M.gguf": 3_100,
            "Odd-Q6_K-00001-of-00002.gguf": 2_000, "Odd-Q8_0.gguf": 4_000,
        }),
        "unlabeled": _make(olah, "Unlabeled-GGUF", {"model.gguf": 2_000}),
    }
