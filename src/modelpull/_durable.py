"""Putting files in place so that a power cut never leaves a short file under a final name.

A rename is atomic, but not durable by itself: after a crash the new name can
point at a file whose bytes never reached the disk. So every publish goes:
the file's bytes are flushed (``fsync``), then it is renamed into place, then
the folder holding the new name is flushed. One flush per file, never per part.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["fsync_dirs", "replace_durably", "write_atomic"]


def _fsync_dir(folder: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return  # a platform that cannot open folders (Windows) keeps its own guarantees
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a folder
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(folders: Iterable[Path]) -> None:
    """Flush each folder's entries once (new names, renames, symlinks)."""
    for folder in dict.fromkeys(Path(f) for f in folders):
        _fsync_dir(folder)


def replace_durably(source: Path, target: Path, fd: int | None = None) -> None:
    """Rename ``source`` over ``target`` once its bytes are on disk (``fd``: already open on it)."""
    if fd is not None:
        os.fsync(fd)
    else:
        with open(source, "rb+") as handle:
            os.fsync(handle.fileno())
    os.replace(source, target)
    _fsync_dir(target.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` as ``path``: a temporary file beside it, flushed, renamed, folder flushed.

    The temporary name is unique to this write, so two writers (threads or
    processes) never write into each other's file; a failed write leaves none.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
