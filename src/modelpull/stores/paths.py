"""Refusing paths that a source could use to escape a store."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import UnsafeSource

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


@dataclass(frozen=True)
class FileSlot:
    """Where one file's bytes go in a store: the partial, the final place, the lock."""

    final: Path
    partial: Path
    lock: Path


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def check_sha256_hex(value: str) -> str:
    """A sha256 in lower-case hex (it becomes part of a path: nothing else gets through)."""
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise UnsafeSource(f"invalid sha256 {str(value)[:80]!r}")
    return value


def with_size(paths: Iterable[Path], size: int) -> list[Path]:
    """Those of ``paths`` that are regular files of exactly ``size`` bytes."""
    found = []
    for path in paths:
        try:
            if path.is_file() and path.stat().st_size == size:
                found.append(path)
        except OSError:
            continue
    return found


def shared_bytes(paths: Iterable[Path]) -> int:
    """Bytes of these files that have another name elsewhere (a hard link: on disk once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            continue
        if stat.st_nlink > 1 and (stat.st_dev, stat.st_ino) not in seen:
            seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_size
    return total


class DigestBlobs:
    """Blobs kept by digest, with partial downloads and locks in a work folder of their own.

    A store says where a blob lives (:meth:`blob_path`); its partials and locks
    are ``<work>/sha256-<hex>.partial`` and ``.lock``, out of the folder the
    store's own tool reads (Ollama and Docker Model Runner both clean theirs).
    """

    work: Path

    def blob_path(self, digest: str) -> Path:
        raise NotImplementedError

    def partial_path(self, digest: str) -> Path:
        return self.work / f"sha256-{_digest_hex(digest)}.partial"

    def lock_path(self, digest: str) -> Path:
        return self.work / f"sha256-{_digest_hex(digest)}.lock"

    def has_blob(self, digest: str, size: int) -> bool:
        """True when the blob is in the store with the expected size (verified when written)."""
        try:
            return self.blob_path(digest).stat().st_size == size
        except OSError:
            return False


def _digest_hex(digest: str) -> str:
    from .._oci import digest_hex

    return digest_hex(digest)
