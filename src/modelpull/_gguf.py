"""GGUF file names: the quantization a name carries, projectors, split parts.

Pure functions on names, shared by the GGUF sources (which file to fetch) and
the inventory (what kind of model a folder holds).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

__all__ = ["SPLIT", "gguf_quantization", "is_projector", "quantization_of"]

QUANT = re.compile(
    r"(?<![a-z0-9])(?:ud-)?(?:"
    r"i?q[1-8](?:_(?:[0-9]+|k|[sml]|xl|xxs|xs|nl))*"
    r"|tq[12]_0|mxfp4(?:_moe)?|bf16|fp16|f16|fp32|f32|f64"
    r")(?![a-z0-9])",
    re.IGNORECASE,
)
#: a part of a split model: ``<stem>-00001-of-00003.gguf``
SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>[0-9]{5})-of-(?P<count>[0-9]{5})\.gguf$", re.IGNORECASE)


def quantization_of(filename: str) -> str | None:
    """The quantization label of a GGUF file name (upper case), e.g. ``Q4_K_M``; None if none."""
    name = PurePosixPath(filename).name
    split = SPLIT.match(name)
    stem = split.group("stem") if split else re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    found = list(QUANT.finditer(stem))
    return found[-1].group(0).upper() if found else None


def is_projector(path: str) -> bool:
    return "mmproj" in PurePosixPath(path).name.lower()


def gguf_quantization(paths: list[str]) -> str | None:
    """The quantizations of a model's GGUF files (projectors left out), e.g. ``Q4_K_M``."""
    labels = dict.fromkeys(
        label for path in paths if not is_projector(path) and (label := quantization_of(path))
    )
    return ", ".join(labels) or None
