"""Unpacking a verified tar layer (plain, gzip or zstd) into a model folder, safely.

Tar layers come from strangers' registries, so every entry is checked before
anything reaches the destination. Refused, each as :class:`UnsafeSource`:

* absolute names, ``..``, ``.`` or empty components, backslashes, control characters;
* symbolic links, hard links, character and block devices, FIFOs and every other
  entry type that is not a directory or a regular file;
* two entries naming one path, and an entry below a path that is a file;
* an entry naming a path that another layer already placed (``reserved``);
* more bytes than ``max_bytes`` (a compressed layer can expand without limit).

The whole archive is first extracted into a staging folder beside the
destination (same parent, so moving is a rename on one file system; a caller
may name another folder on that file system, so that nothing is written
outside its own tree); only when
every entry passed are the files moved into place. A refused archive therefore
leaves nothing behind, and nothing is ever written outside ``destination``.
File modes keep only the permission bits a model file needs: 0o755 when the
archive marks the file executable, else 0o644 (no setuid, setgid or sticky bit);
folders are 0o755. Owners and modification times in the archive are ignored.
Each file is flushed before it gets its final name, and the folders holding
the new names after (:mod:`modelpull._durable`).
"""

from __future__ import annotations

import gzip
import io
import os
import secrets
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal, cast

from ._durable import fsync_dirs
from ._safepath import safe_relative
from .errors import IncompatibleModel, UnsafeSource

__all__ = ["Compression", "TarLayer", "unpack_layers", "unpack_tar"]

Compression = Literal["none", "gzip", "zstd"]

_CHUNK = 1 << 20
_ENTRY_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
}


def unpack_tar(
    archive: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    compression: Compression = "none",
    *,
    reserved: Iterable[PurePosixPath | str] = (),
    max_bytes: int | None = None,
    staging_in: str | os.PathLike[str] | None = None,
) -> list[PurePosixPath]:
    """Extract ``archive`` into ``destination`` (created if missing); return the files written.

    ``reserved`` holds relative paths other layers already own (a tar entry
    naming one is refused); pass the returned list on to the next layer's call
    so two layers cannot claim one file. Files already in ``destination`` under
    the same name (an earlier run of the same pull) are replaced. The staging
    folder is made in ``staging_in`` (default: the destination's parent; it must
    be on the destination's file system). Raises :class:`UnsafeSource` (see the
    module docstring) or :class:`IncompatibleModel` when zstd support is not
    installed; a local disk problem is the :class:`OSError` it is.
    """
    source = Path(archive)
    target = Path(destination)
    taken = {PurePosixPath(p) for p in reserved}
    target.parent.mkdir(parents=True, exist_ok=True)
    parent = Path(staging_in) if staging_in is not None else target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{target.name}.unpack-{secrets.token_hex(6)}"
    staging.mkdir(mode=0o700)
    try:
        with _decompressed(source, compression) as stream:
            files, folders = _extract_checked(stream, staging, taken, max_bytes, source.name)
        _move_into_place(staging, target, files, folders)
        return files
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class TarLayer:
    """A verified tar layer and where it unpacks: ``folder`` relative to the model folder."""

    archive: Path
    folder: PurePosixPath
    compression: Compression = "none"


def unpack_layers(
    model_folder: str | os.PathLike[str],
    layers: Sequence[TarLayer],
    *,
    reserved: Iterable[PurePosixPath] = (),
    staging_in: str | os.PathLike[str] | None = None,
) -> list[list[PurePosixPath]]:
    """Unpack every tar layer of one model into ``model_folder``, in order; the files of each.

    ``reserved`` are the paths (relative to the model folder) the model's raw
    layers occupy. No layer may write over them, over a file another layer
    wrote, or below a file; each layer is checked as :func:`unpack_tar` says.
    Returned paths are relative to ``model_folder``.
    """
    root = Path(model_folder)
    taken = [PurePosixPath(p) for p in reserved]
    written: list[list[PurePosixPath]] = []
    for layer in layers:
        inside = layer.folder
        at_root = inside == PurePosixPath(".")
        # unpack_tar's reserved paths are relative to the folder it unpacks into
        mine = [p if at_root else p.relative_to(inside) for p in taken if at_root or inside in p.parents]
        files = unpack_tar(
            layer.archive, root.joinpath(*inside.parts), layer.compression, reserved=mine, staging_in=staging_in
        )
        placed = [inside / p for p in files]
        taken.extend(placed)
        written.append(placed)
    return written


@contextmanager
def _decompressed(path: Path, compression: Compression) -> Iterator[IO[bytes]]:
    with open(path, "rb") as raw:
        if compression == "none":
            yield raw
        elif compression == "gzip":
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield cast(IO[bytes], unzipped)
        elif compression == "zstd":
            try:
                import zstandard
            except ImportError:
                raise IncompatibleModel(
                    "this model has a zstd-compressed layer; install the 'zstandard' package to unpack it"
                ) from None
            with zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as unzstd:
                yield io.BufferedReader(unzstd, _CHUNK)
        else:
            raise IncompatibleModel(f"unknown layer compression {compression!r}")


def _extract_checked(
    stream: IO[bytes],
    staging: Path,
    reserved: set[PurePosixPath],
    max_bytes: int | None,
    label: str,
) -> tuple[list[PurePosixPath], list[PurePosixPath]]:
    """Write every entry of the tar ``stream`` below ``staging``, refusing anything unsafe."""
    files: list[PurePosixPath] = []
    folders: list[PurePosixPath] = []
    seen: dict[PurePosixPath, str] = {}  # path -> "file" | "folder"
    written = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                relative = _entry_path(member.name, label)
                if relative is None:  # the archive's own root, "." or "./"
                    if not member.isdir():
                        raise UnsafeSource(f"the layer {label} has a non-folder entry for its root")
                    continue
                _check_kind(member, relative, label)
                _check_unclaimed(relative, seen, reserved, label)
                if member.isdir():
                    seen[relative] = "folder"
                    folders.append(relative)
                    staging.joinpath(*relative.parts).mkdir(mode=0o755, parents=True, exist_ok=True)
                    continue
                seen[relative] = "file"
                written += member.size
                if max_bytes is not None and written > max_bytes:
                    raise UnsafeSource(
                        f"the layer {label} unpacks to more than {max_bytes} bytes; refusing it"
                    )
                body = tar.extractfile(member)
                if body is None:  # pragma: no cover - isreg() members always have a body
                    raise UnsafeSource(f"the layer {label} has an unreadable entry {str(relative)!r}")
                _write_file(staging, relative, body, member.size, member.mode)
                files.append(relative)
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a local disk problem, not the archive's fault
        raise UnsafeSource(f"the layer {label} is not a valid tar archive ({exc}); refusing it") from None
    except Exception as exc:
        if type(exc).__module__.startswith("zstandard"):
            raise UnsafeSource(f"the layer {label} is not valid zstd data ({exc}); refusing it") from None
        raise
    return files, folders


def _entry_path(name: str, label: str) -> PurePosixPath | None:
    # "./a/b" is how `tar -C dir .` names entries; the leading "./" means nothing.
    trimmed = name
    while trimmed.startswith("./"):
        trimmed = trimmed[2:]
    if trimmed != "/":
        trimmed = trimmed.rstrip("/")
    if trimmed in ("", "."):
        return None
    try:
        return safe_relative(trimmed)
    except UnsafeSource:
        raise UnsafeSource(
            f"the layer {label} has an entry {name[:120]!r} that would land outside the model "
            "folder (absolute path, '..' or an invalid name); refusing it"
        ) from None


def _check_kind(member: tarfile.TarInfo, relative: PurePosixPath, label: str) -> None:
    if member.isreg() or member.isdir():
        return
    kind = _ENTRY_KINDS.get(member.type, f"an entry of type {member.type!r}")
    raise UnsafeSource(
        f"the layer {label} has {kind} at {str(relative)[:120]!r}; only folders and regular "
        "files are accepted, refusing it"
    )


def _check_unclaimed(
    relative: PurePosixPath,
    seen: dict[PurePosixPath, str],
    reserved: set[PurePosixPath],
    label: str,
) -> None:
    if relative in seen:
        raise UnsafeSource(
            f"the layer {label} names {str(relative)[:120]!r} twice; refusing it"
        )
    if relative in reserved:
        raise UnsafeSource(
            f"the layer {label} would overwrite {str(relative)[:120]!r}, which another layer of "
            "this model provides; refusing it"
        )
    for parent in relative.parents:
        if seen.get(parent) == "file" or parent in reserved:
            raise UnsafeSource(
                f"the layer {label} puts {str(relative)[:120]!r} below {str(parent)!r}, which is "
                "a file; refusing it"
            )


def _write_file(staging: Path, relative: PurePosixPath, body: IO[bytes], size: int, mode: int) -> None:
    path = staging.joinpath(*relative.parts)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    permissions = 0o755 if mode & 0o111 else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        left = size
        while left:
            chunk = body.read(min(_CHUNK, left))
            if not chunk:
                raise tarfile.ReadError(f"{relative} is cut short")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            left -= len(chunk)
        os.fchmod(fd, permissions)
        os.fsync(fd)  # its bytes on disk before it gets its final name (one flush per file)
    finally:
        os.close(fd)


def _move_into_place(
    staging: Path, target: Path, files: list[PurePosixPath], folders: list[PurePosixPath]
) -> None:
    """Move checked files from ``staging`` into ``target`` without following links there."""
    _ensure_real_folder(target, target)
    for folder in folders:
        _ensure_folder_chain(target, folder)
    for relative in files:
        _ensure_folder_chain(target, relative.parent)
        final = target.joinpath(*relative.parts)
        try:
            existing = os.lstat(final)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            raise UnsafeSource(
                f"{final} exists and is not a regular file; refusing to replace it with a layer's file"
            )
        os.replace(staging.joinpath(*relative.parts), final)
    fsync_dirs([target, *(target.joinpath(*relative.parent.parts) for relative in files)])


def _ensure_folder_chain(target: Path, relative: PurePosixPath) -> None:
    current = target
    for part in relative.parts:
        current = current / part
        _ensure_real_folder(current, target)


def _ensure_real_folder(path: Path, target: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        path.mkdir(mode=0o755)
        return
    if not stat.S_ISDIR(info.st_mode):
        # A symlink here could send the files anywhere on the machine.
        raise UnsafeSource(
            f"{path} is not a plain folder (a file or a symbolic link); refusing to unpack into "
            f"{target} through it"
        )
