"""What the stores share: file slots, blobs by digest, copies of a blob elsewhere."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnsafeSource


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
