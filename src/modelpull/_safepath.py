"""Paths a source names, refused when they could escape the folder they land in.

Every name that comes from a server (a file in a repo listing, a tar entry, an
OCI layer's file path, a URL's file name) goes through :func:`safe_relative`
before it is joined to a folder, and :func:`join_inside` joins it.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from .errors import UnsafeSource

__all__ = ["join_inside", "safe_relative"]

_BAD_CHARS = re.compile(r"[\x00-\x1f\\]")


def safe_relative(path: str) -> PurePosixPath:
    """A relative POSIX path that stays inside whatever folder it is joined to."""
    if not isinstance(path, str) or not path or _BAD_CHARS.search(path) or len(path) > 1024:
        raise UnsafeSource(f"the source named an invalid file path {str(path)[:80]!r}; refusing it")
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(part in ("..", ".", "") for part in path.split("/")):
        raise UnsafeSource(
            f"the source named the file {path[:80]!r}, which would land outside the model "
            "folder; refusing it"
        )
    return pure


def join_inside(root: Path, relative: str) -> Path:
    target = root.joinpath(*safe_relative(relative).parts)
    # ``..`` is already refused; what is left is a symlinked folder inside root.
    # The target itself may be a symlink (HF snapshots are), so check its folder.
    root_resolved = root.resolve()
    folder = target.parent.resolve()
    if folder != root_resolved and root_resolved not in folder.parents:
        raise UnsafeSource(f"the file {relative[:80]!r} would land outside {root}; refusing it")
    return target
