"""OCI image layouts: a folder, or a ``.tar`` of one, holding blobs and an index of tagged manifests.

    <layout>/oci-layout             {"imageLayoutVersion": "1.0.0"}
    <layout>/index.json             the manifests, each named by org.opencontainers.image.ref.name
    <layout>/blobs/sha256/<hex>     every blob (configs, layers, manifests) by digest

This is how a model crosses an air gap on a disk: ``push(…, "oci-layout:/mnt/disk")``
writes one, ``download_model("oci", "oci-layout:/mnt/disk:name")`` reads it
with no network, and skopeo (``oci:/mnt/disk:name``, ``oci-archive:`` for a
tar) reads and writes the very same thing.

References are ``oci-layout:PATH[:REF]``, split at the first ``:`` after the
prefix as skopeo splits ``oci:PATH:REF`` (so ``PATH`` holds no ``:``). ``REF``
is the ``org.opencontainers.image.ref.name`` of one manifest in the index; it
may be a tag (``v1``) or a whole name (``team/tiny:v1``). ``PATH`` ending in
``.tar`` (or naming an existing file) is a tar of a layout.

Writing: blobs go to a temporary name, are checked against their digest,
flushed and renamed; ``index.json`` is replaced atomically, last, so a
manifest is named only once every blob it needs is there. A tar is written
whole to a temporary file beside it (the blobs of an existing tar are carried
over) and renamed over the old one; its entries are sorted and carry
constant metadata (mtime 0, uid/gid 0, mode 0644), so the same content gives
the same tar.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._durable import fsync_dirs, replace_durably, write_atomic
from ..errors import ChecksumMismatch, InvalidModel, InvalidOption, ModelNotFound, UnsafeSource
from .manifest import MAX_MANIFEST_SIZE, OCI_INDEX, digest_hex

__all__ = [
    "LAYOUT_PREFIX",
    "REF_NAME",
    "LayoutReader",
    "LayoutReference",
    "LayoutWriter",
    "copy_verified",
    "open_layout",
    "parse_layout_reference",
]

LAYOUT_PREFIX = "oci-layout:"
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,255}")
_BLOCK = 4 << 20
_RECORD = 10240


@dataclass(frozen=True)
class LayoutReference:
    """``oci-layout:PATH[:REF]`` taken apart."""

    path: Path
    ref: str | None

    @property
    def is_tar(self) -> bool:
        return self.path.suffix == ".tar" or self.path.is_file()

    def __str__(self) -> str:
        return f"{LAYOUT_PREFIX}{self.path}" + (f":{self.ref}" if self.ref else "")


def is_layout_reference(text: object) -> bool:
    return isinstance(text, str) and text.startswith(LAYOUT_PREFIX)


def parse_layout_reference(text: str) -> LayoutReference:
    """``oci-layout:PATH[:REF]`` → path and ref name; :class:`InvalidModel` when malformed (no I/O)."""
    if not is_layout_reference(text):
        raise InvalidModel(f"an OCI layout is written oci-layout:PATH[:REF], got {str(text)[:100]!r}")
    rest = text[len(LAYOUT_PREFIX):]
    path, sep, ref = rest.partition(":")
    if not path or "\x00" in path:
        raise InvalidModel(f"oci-layout: needs a folder or .tar path, got {text[:100]!r}")
    if sep and not _REF.fullmatch(ref):
        raise InvalidModel(
            f"invalid name {ref[:100]!r} in {text[:100]!r}: letters, digits and ._:@/+- (at most 256)"
        )
    return LayoutReference(Path(path).expanduser(), ref or None)


def check_ref_name(ref: str) -> str:
    if not _REF.fullmatch(ref):
        raise InvalidModel(f"invalid OCI layout name {ref[:100]!r}: letters, digits and ._:@/+-")
    return ref


# -- reading --------------------------------------------------------------------------


class LayoutReader:
    """An OCI layout read from a folder or a tar: its index, its blobs. No network, nothing written."""

    def __init__(self, where: LayoutReference) -> None:
        self.where = where
        self.label = str(where.path)
        self._tar: dict[str, tuple[int, int]] | None = None
        self._tar_fd: int | None = None
        if where.is_tar:
            self._open_tar(where.path)
        elif not where.path.is_dir():
            raise ModelNotFound(f"there is no OCI layout at {where.path} (no such folder or .tar)")
        try:
            self.layout = json.loads(self._small("oci-layout", 4096))
        except ValueError:
            raise UnsafeSource(f"{where.path} holds an unreadable oci-layout file") from None
        if not isinstance(self.layout, dict) or "imageLayoutVersion" not in self.layout:
            raise UnsafeSource(f"{where.path} is not an OCI image layout (its oci-layout file says nothing)")
        try:
            index = json.loads(self._small("index.json", MAX_MANIFEST_SIZE))
        except ValueError:
            raise UnsafeSource(f"the index.json of {where.path} is not JSON") from None
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
            raise UnsafeSource(f"the index.json of {where.path} lists no manifests")
        self.manifests: list[dict[str, Any]] = manifests

    def _open_tar(self, path: Path) -> None:
        try:
            with tarfile.open(path, "r:") as archive:
                members = {
                    _member_name(m.name): (m.offset_data, m.size) for m in archive.getmembers() if m.isreg()
                }
        except FileNotFoundError:
            raise ModelNotFound(f"there is no OCI layout at {path} (no such .tar)") from None
        except (tarfile.TarError, OSError) as exc:
            raise UnsafeSource(f"{path} is not a readable tar of an OCI layout ({exc})") from None
        self._tar = members
        self._tar_fd = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        if self._tar_fd is not None:
            os.close(self._tar_fd)
            self._tar_fd = None

    def __enter__(self) -> LayoutReader:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refs(self) -> list[str]:
        return [str(m.get("annotations", {}).get(REF_NAME)) for m in self.manifests
                if isinstance(m.get("annotations"), dict) and m["annotations"].get(REF_NAME)]

    def find(self, ref: str | None) -> dict[str, Any]:
        """The index entry named ``ref`` (a digest works too); without ``ref``, the only one."""
        if ref is None:
            if len(self.manifests) == 1:
                return self.manifests[0]
            if not self.manifests:
                raise ModelNotFound(f"the OCI layout {self.label} holds no manifest")
            raise InvalidModel(
                f"the OCI layout {self.label} holds {len(self.manifests)} manifests; name one: "
                + ", ".join(f"{LAYOUT_PREFIX}{self.where.path}:{r}" for r in self.refs()[:20])
            )
        for entry in self.manifests:
            annotations = entry.get("annotations")
            if isinstance(annotations, dict) and annotations.get(REF_NAME) == ref:
                return entry
        for entry in self.manifests:
            if entry.get("digest") == ref:
                return entry
        known = ", ".join(self.refs()[:20]) or "none"
        raise ModelNotFound(f"the OCI layout {self.label} has no manifest named {ref!r} (it has: {known})")

    def blob_size(self, digest: str) -> int | None:
        name = _blob_name(digest)
        if self._tar is not None:
            found = self._tar.get(name)
            return found[1] if found else None
        try:
            return (self.where.path / name).stat().st_size
        except OSError:
            return None

    def read_blob(self, digest: str, limit: int = MAX_MANIFEST_SIZE) -> bytes:
        """A small blob (a manifest, a config), checked against its digest."""
        data = self._small(_blob_name(digest), limit)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise ChecksumMismatch(f"blob {digest} in {self.label} does not match its digest")
        return data

    def _small(self, name: str, limit: int) -> bytes:
        if self._tar is not None:
            found = self._tar.get(name)
            if found is None:
                raise ModelNotFound(f"{self.label} has no {name}; it is not a whole OCI layout")
            offset, size = found
            if size > limit:
                raise UnsafeSource(f"{name} in {self.label} is {size} bytes; refusing to read more than {limit}")
            assert self._tar_fd is not None
            return os.pread(self._tar_fd, size, offset)
        path = self.where.path / name
        try:
            size = path.stat().st_size
            if size > limit:
                raise UnsafeSource(f"{path} is {size} bytes; refusing to read more than {limit}")
            return path.read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(f"{self.label} has no {name}; it is not a whole OCI layout") from None

    def copy_blob(
        self, digest: str, size: int, dest: Path, progress: Callable[[int], None], cancel: threading.Event,
    ) -> None:
        """Copy one blob to ``dest`` (through a temporary file), checked against its digest. Blocking."""
        name = _blob_name(digest)
        if self._tar is not None:
            found = self._tar.get(name)
            if found is None or found[1] != size:
                raise ModelNotFound(f"{self.label} is missing blob {digest} (or it has another size)")
            assert self._tar_fd is not None
            copy_verified(self._tar_fd, found[0], size, digest, dest, progress, cancel)
            return
        path = self.where.path / name
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ModelNotFound(f"{self.label} is missing blob {digest}") from None
        try:
            if os.fstat(fd).st_size != size:
                raise ModelNotFound(f"blob {digest} in {self.label} has another size than its manifest says")
            copy_verified(fd, 0, size, digest, dest, progress, cancel)
        finally:
            os.close(fd)


def open_layout(where: LayoutReference) -> LayoutReader:
    return LayoutReader(where)


def copy_verified(
    fd: int, offset: int, size: int, digest: str, dest: Path, progress: Callable[[int], None],
    cancel: threading.Event,
) -> None:
    """``size`` bytes from ``fd`` at ``offset`` to ``dest``: a temporary file, sha256 checked, renamed.

    ``progress(n)`` gets the bytes copied so far; ``cancel`` stops it
    (the temporary file is removed). :class:`ChecksumMismatch` leaves nothing.
    """
    digest_hex(digest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            for block in _checked_blocks(fd, offset, size, digest, progress, cancel):
                view = memoryview(block)
                while view:
                    view = view[os.write(out, view):]
            replace_durably(tmp, dest, out)
        finally:
            os.close(out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _checked_blocks(
    fd: int, offset: int, size: int, digest: str, progress: Callable[[int], None], cancel: threading.Event,
) -> Iterator[bytes]:
    """``size`` bytes of ``fd`` from ``offset`` in blocks; :class:`ChecksumMismatch` after the last one
    when they do not hash to ``digest`` (so nothing made of them may be kept)."""
    hasher = hashlib.sha256()
    done = 0
    while done < size:
        if cancel.is_set():
            raise InterruptedError("cancelled")
        block = os.pread(fd, min(_BLOCK, size - done), offset + done)
        if not block:
            raise ChecksumMismatch(f"blob {digest} ends early; nothing was written")
        hasher.update(block)
        yield block
        done += len(block)
        progress(done)
    if "sha256:" + hasher.hexdigest() != digest:
        raise ChecksumMismatch(f"blob {digest} does not match its digest; nothing was written")


# -- writing --------------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutBlob:
    """A blob to write: from a file on disk, or small bytes in memory."""

    digest: str
    size: int
    path: Path | None = None
    data: bytes | None = None


class LayoutWriter:
    """Writes blobs and a tagged manifest into an OCI layout folder, or a tar of one."""

    def __init__(self, where: LayoutReference) -> None:
        self.where = where
        self.tar = where.is_tar
        self.root = where.path
        if self.tar:
            if where.path.is_dir():
                raise InvalidOption(f"{where.path} is a folder; a tar layout needs a file name ending in .tar")
        elif where.path.exists() and not where.path.is_dir():
            raise InvalidOption(f"{where.path} is a file; name a folder, or a .tar for a tar of a layout")
        self._old: LayoutReader | None = None
        if self.tar and where.path.is_file():
            self._old = LayoutReader(LayoutReference(where.path, None))

    def close(self) -> None:
        if self._old is not None:
            self._old.close()

    def has_blob(self, digest: str, size: int) -> bool:
        if self.tar:
            return self._old is not None and self._old.blob_size(digest) == size
        try:
            return (self.root / _blob_name(digest)).stat().st_size == size
        except OSError:
            return False

    def _check_layout_file(self) -> None:
        """A new or empty folder becomes a layout; a folder holding anything else is refused."""
        marker = self.root / "oci-layout"
        if marker.is_file():
            return
        if self.root.is_dir() and any(self.root.iterdir()):
            raise InvalidOption(
                f"{self.root} is a folder with other things in it, not an OCI layout; name an empty or new folder"
            )
        write_atomic(marker, _layout_file())

    def write_folder_blob(
        self, blob: LayoutBlob, progress: Callable[[int], None], cancel: threading.Event
    ) -> None:
        """One blob into the folder, checked against its digest (blocking)."""
        assert not self.tar
        self._check_layout_file()
        dest = self.root / _blob_name(blob.digest)
        if blob.data is not None:
            if "sha256:" + hashlib.sha256(blob.data).hexdigest() != blob.digest:
                raise ChecksumMismatch(f"blob {blob.digest} does not match its digest; nothing was written")
            write_atomic(dest, blob.data)
            progress(blob.size)
            return
        assert blob.path is not None
        fd = os.open(blob.path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size != blob.size:
                raise ChecksumMismatch(f"{blob.path} changed size since it was described; nothing was written")
            copy_verified(fd, 0, blob.size, blob.digest, dest, progress, cancel)
        finally:
            os.close(fd)

    def tag_folder(self, ref: str, descriptor: Mapping[str, Any]) -> None:
        """Name the manifest ``ref`` in ``index.json`` (replacing what had that name), atomically, last."""
        assert not self.tar
        write_atomic(self.root / "oci-layout", _layout_file())
        entries = _index_entries(self.root / "index.json")
        write_atomic(self.root / "index.json", _index_bytes(_retag(entries, ref, descriptor)))

    def write_tar(
        self, blobs: Iterable[LayoutBlob], ref: str, descriptor: Mapping[str, Any],
        progress: Callable[[str, int], None], cancel: threading.Event,
    ) -> None:
        """The whole tar: the old one's blobs, the new ones (sorted by digest), ``index.json`` last.

        Written to a temporary file beside the target and renamed over it
        once complete (blocking). ``progress(digest, n)`` counts new bytes.
        """
        assert self.tar
        target = self.root
        target.parent.mkdir(parents=True, exist_ok=True)
        entries: list[dict[str, Any]] = list(self._old.manifests) if self._old is not None else []
        new = {blob.digest: blob for blob in blobs}
        carried = [] if self._old is None else [
            name for name in sorted(self._old._tar or {}) if name.startswith("blobs/sha256/")
            and "sha256:" + name.rsplit("/", 1)[1] not in new
        ]
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with os.fdopen(out, "wb", closefd=False) as stream:
                writer = _TarStream(stream)
                writer.file("oci-layout", _layout_file())
                writer.folder("blobs/")
                writer.folder("blobs/sha256/")
                items: list[tuple[str, str | LayoutBlob]] = [(name, name) for name in carried]
                items.extend((_blob_name(digest), blob) for digest, blob in new.items())
                for _, item in sorted(items, key=lambda pair: pair[0]):
                    if isinstance(item, str):
                        self._carry(writer, item, cancel)
                    else:
                        self._add(writer, item, progress, cancel)
                writer.file("index.json", _index_bytes(_retag(entries, ref, descriptor)))
                writer.close()
                stream.flush()
            replace_durably(tmp, target, out)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(out)
            fsync_dirs([target.parent])

    def _carry(self, writer: _TarStream, name: str, cancel: threading.Event) -> None:
        assert self._old is not None and self._old._tar is not None and self._old._tar_fd is not None
        offset, size = self._old._tar[name]
        digest = "sha256:" + name.rsplit("/", 1)[1]
        writer.copy(name, self._old._tar_fd, offset, size, digest, lambda n: None, cancel)

    def _add(
        self, writer: _TarStream, blob: LayoutBlob, progress: Callable[[str, int], None], cancel: threading.Event
    ) -> None:
        name = _blob_name(blob.digest)
        if blob.data is not None:
            if "sha256:" + hashlib.sha256(blob.data).hexdigest() != blob.digest:
                raise ChecksumMismatch(f"blob {blob.digest} does not match its digest; nothing was written")
            writer.file(name, blob.data)
            progress(blob.digest, blob.size)
            return
        assert blob.path is not None
        fd = os.open(blob.path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size != blob.size:
                raise ChecksumMismatch(f"{blob.path} changed size since it was described; nothing was written")
            writer.copy(name, fd, 0, blob.size, blob.digest, lambda n: progress(blob.digest, n), cancel)
        finally:
            os.close(fd)


class _TarStream:
    """A tar written by hand: ustar headers with constant metadata, big copies, sha256 checked."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.written = 0

    def _header(self, name: str, size: int, kind: bytes, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.type, info.mode = size, kind, mode
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        self._write(info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict"))

    def _write(self, data: bytes) -> None:
        self.stream.write(data)
        self.written += len(data)

    def _pad(self, size: int) -> None:
        if size % 512:
            self._write(b"\0" * (512 - size % 512))

    def folder(self, name: str) -> None:
        self._header(name, 0, tarfile.DIRTYPE, 0o755)

    def file(self, name: str, data: bytes) -> None:
        self._header(name, len(data), tarfile.REGTYPE, 0o644)
        self._write(data)
        self._pad(len(data))

    def copy(
        self, name: str, fd: int, offset: int, size: int, digest: str, progress: Callable[[int], None],
        cancel: threading.Event,
    ) -> None:
        self._header(name, size, tarfile.REGTYPE, 0o644)
        for block in _checked_blocks(fd, offset, size, digest, progress, cancel):
            self._write(block)
        self._pad(size)

    def close(self) -> None:
        self._write(b"\0" * 1024)
        if self.written % _RECORD:
            self._write(b"\0" * (_RECORD - self.written % _RECORD))


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{digest_hex(digest)}"


def _member_name(name: str) -> str:
    return name.removeprefix("./")


def _layout_file() -> bytes:
    return json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()


def _index_entries(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except ValueError:
        raise InvalidOption(f"{path} is not JSON; it is not an OCI layout modelpull can add to") from None
    manifests = data.get("manifests") if isinstance(data, dict) else None
    if not isinstance(manifests, list):
        raise InvalidOption(f"{path} lists no manifests; it is not an OCI layout modelpull can add to")
    return [m for m in manifests if isinstance(m, dict)]


def _retag(entries: list[dict[str, Any]], ref: str, descriptor: Mapping[str, Any]) -> list[dict[str, Any]]:
    kept = []
    for entry in entries:
        annotations = entry.get("annotations")
        if isinstance(annotations, dict) and annotations.get(REF_NAME) == ref:
            continue
        kept.append(entry)
    named = dict(descriptor)
    named["annotations"] = {**dict(descriptor.get("annotations") or {}), REF_NAME: ref}
    kept.append(named)
    return kept


def _index_bytes(entries: list[dict[str, Any]]) -> bytes:
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return json.dumps(index, indent=2).encode() + b"\n"


# -- pulling from a layout -------------------------------------------------------------


class LayoutBlobs:
    """The transfer engine's ``fetch_all`` for blobs that come from a layout on disk, not a network.

    Each transfer's blob is copied to its destination (through a temporary
    file, sha256 checked, renamed); one that is there already with its size
    counts as present. Bytes are counted under each transfer's key.
    """

    def __init__(self, reader: LayoutReader, tracker: Any) -> None:
        self.reader = reader
        self.tracker = tracker

    async def fetch_all(self, transfers: Iterable[Any]) -> None:
        import asyncio

        for transfer in transfers:
            dest: Path = transfer.dest
            try:
                there = dest.stat().st_size == transfer.size and transfer.trust_existing
            except OSError:
                there = False
            if there:
                self.tracker.update(transfer.key, transfer.size)
                continue
            cancel = threading.Event()
            key: str = transfer.key
            self.tracker.begin(key)

            def progress(count: int, key: str = key) -> None:
                self.tracker.update(key, count)

            try:
                await asyncio.to_thread(self.reader.copy_blob, transfer.digest, transfer.size, dest, progress, cancel)
            except asyncio.CancelledError:
                cancel.set()
                raise
            finally:
                self.tracker.end(transfer.key)


def layout_model_name(ref: str | None, path: Path) -> str:
    """The reference a model read from a layout is known by (and tagged with in a store).

    A ref name that is itself a name (``team/tiny:v1``) is used as it is; a bare
    tag (``v1``) or none names the layout's folder: ``localhost/oci-layout/<folder>:<tag>``.
    """
    if ref and "/" in ref and "@" not in ref:
        return ref
    stem = re.sub(r"[^a-z0-9]+", "-", path.name.lower().removesuffix(".tar")).strip("-") or "layout"
    tag = ref if ref and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", ref) else "latest"
    return f"localhost/oci-layout/{stem}:{tag}"
