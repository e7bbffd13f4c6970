"""Bytes that are already on this machine: another store's copy of the same blob.

Before a file goes to the network the engine tries the copies its caller
found (the same digest in the Hugging Face cache, LM Studio's folder, Ollama's
store, ...). A copy is brought next to the file's final place the cheapest way
the filesystem allows, and is trusted only once its digest is checked:

1. a hard link (same filesystem): no bytes move, one copy on disk;
2. a reflink (``FICLONE``: btrfs, XFS, bcachefs): the blocks are shared until
   one side writes;
3. ``copy_file_range``: the kernel copies, server-side on NFS and SMB;
4. a plain copy.

Never a symbolic link: deleting the model from the other store must never
break this one (a hard link, a reflink or a copy each survives it). A copy
whose digest does not match is dropped (the other store's file is left as it
is, it is not ours) and the next copy, or the network, is tried.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

from .._durable import replace_durably
from .hashing import file_has_digest

__all__ = ["COPY", "LINK", "REFLINK", "adopt_copy", "place_copy"]

LINK, REFLINK, COPY = "hardlink", "reflink", "copy"

#: ``ioctl(dest, FICLONE, src)`` on Linux (``_IOW(0x94, 9, int)``)
_FICLONE = 0x40049409
#: errors that mean "not this way here", not "this copy is broken"
_NOT_HERE = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
             errno.EINVAL, errno.ENOSYS, errno.ETXTBSY, errno.EBADF, errno.ENOTTY}


def place_copy(source: Path, target: Path) -> str:
    """Give ``target`` (which must not exist) the bytes of ``source``; say how (``hardlink``...).

    Raises :class:`OSError` when ``source`` cannot be read or ``target`` not written.
    """
    try:
        os.link(source, target)
        return LINK
    except OSError as exc:
        if exc.errno not in _NOT_HERE:
            raise
    with open(source, "rb") as src, open(target, "xb") as dst:
        if _reflink(src.fileno(), dst.fileno()):
            return REFLINK
        size = os.fstat(src.fileno()).st_size
        if _copy_range(src.fileno(), dst.fileno(), size):
            return COPY
        src.seek(0)
        dst.seek(0)
        dst.truncate()
        shutil.copyfileobj(src, dst, 8 << 20)
    return COPY


def adopt_copy(source: Path, target: Path, dest: Path, digest: str, size: int,
               cancel: threading.Event) -> str | None:
    """Bring ``source`` to ``target``, check it holds ``digest``, publish it as ``dest``.

    Returns how it came (``hardlink``, ``reflink``, ``copy``), or None when its
    size or digest differs (``target`` is removed; ``source`` is left as it is). The file
    is flushed before its rename and its folder after, as a download is.
    Blocking: run it in a thread; ``cancel`` stops the hashing.
    """
    if source.stat().st_size != size:
        return None
    target.unlink(missing_ok=True)
    how = place_copy(source, target)
    try:
        if not file_has_digest(target, digest, size, cancel) or target.stat().st_size != size:
            target.unlink(missing_ok=True)
            return None
        replace_durably(target, dest)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return how


def _reflink(src: int, dst: int) -> bool:
    try:
        import fcntl
    except ImportError:  # not on this platform
        return False
    try:
        fcntl.ioctl(dst, _FICLONE, src)
    except OSError as exc:
        if exc.errno in _NOT_HERE:
            return False
        raise
    return True


def _copy_range(src: int, dst: int, size: int) -> bool:
    """``copy_file_range`` the whole file; False when the kernel or filesystem cannot."""
    copy = getattr(os, "copy_file_range", None)
    if copy is None:
        return False
    done = 0
    try:
        while done < size:
            moved = copy(src, dst, min(size - done, 1 << 30), done, done)
            if moved == 0:
                return False
            done += moved
    except OSError as exc:
        if exc.errno in _NOT_HERE:
            return False
        raise
    return True
