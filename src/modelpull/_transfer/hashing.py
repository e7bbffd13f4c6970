"""Digests modelpull can verify: ``sha256:<hex>`` and git blob ids ``gitsha1:<hex>``."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any

from ..errors import UnsafeSource

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_GITSHA1 = re.compile(r"gitsha1:[0-9a-f]{40}")


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is one we can verify; refuse anything else."""
    if not isinstance(digest, str) or not (_SHA256.fullmatch(digest) or _GITSHA1.fullmatch(digest)):
        raise UnsafeSource(f"the source gave an invalid digest {str(digest)[:80]!r}; refusing it")
    return digest


def new_hasher(digest: str, size: int) -> Any:
    algo = digest.split(":", 1)[0]
    if algo == "sha256":
        return hashlib.sha256()
    hasher = hashlib.sha1()
    hasher.update(f"blob {size}\0".encode())
    return hasher


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


class HashCancelled(Exception):
    pass


def hash_fd_range(fd: int, start: int, end: int, hasher: Any, cancel: threading.Event) -> None:
    """Feed bytes ``[start, end)`` of an open file to ``hasher`` (runs in a thread)."""
    block = 8 << 20
    pos = start
    while pos < end:
        if cancel.is_set():
            raise HashCancelled()
        data = os.pread(fd, min(block, end - pos), pos)
        if not data:
            raise OSError(f"file ended at byte {pos}, expected {end}")
        hasher.update(data)
        pos += len(data)


def file_has_digest(path: str | os.PathLike[str], digest: str, size: int, cancel: threading.Event) -> bool:
    """Are the first ``size`` bytes of ``path`` the ones ``digest`` names? (Blocking: run it in a
    thread; ``cancel`` stops it.) A file shorter than ``size`` does not match."""
    hasher = new_hasher(digest, size)
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size < size:
            return False
        hash_fd_range(fd, 0, size, hasher, cancel)
    finally:
        os.close(fd)
    return bool(hasher.hexdigest() == hex_of(digest))
