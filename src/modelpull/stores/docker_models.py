"""Docker Model Runner's model store on disk, written exactly as Docker Model Runner writes it.

    <models>/layout.json               {"version": "1.0.0"}
    <models>/models.json               {"models": [{"id", "tags", "files"}, …]}
    <models>/manifests/sha256/<hex>    the manifest bytes as served; <hex> = sha256 of them
    <models>/blobs/sha256/<hex>        every layer (by digest) and the config blob
    <models>/bundles/sha256/<hex>/     Docker Model Runner's runtime view, rebuilt on demand

``<models>`` is the ``models_dir`` argument, else ``$MODELS_PATH``, else
``~/.docker/models`` (Docker Desktop and ``docker model`` share it). An index
entry is ``id`` = ``sha256:<manifest digest>``, ``tags`` in Docker Model
Runner's normalised form (:func:`dmr_tag`, e.g. ``docker.io/ai/smollm2:latest``)
and ``files`` = the layer digests in manifest order, then the config digest.
Docker Model Runner lists a model from ``models.json``, the manifest and the
config alone; ``bundles/`` is not needed (it is rebuilt when missing).

The write order is Docker Model Runner's: ``layout.json`` (when missing), the
blobs, the manifest (refused unless every blob it names is present), then the
index entry with its tags. Docker Model Runner writes the entry and then adds
the tags in a second write; one write with both leaves the same file and one
less moment in which the model is listed without its tag. A tag moves: it is
taken off any other model that had it, as ``docker model tag`` does. Every JSON
file is written to a temporary file, fsynced and renamed, and its folder
fsynced. ``models.json`` is rewritten under a file lock
(``.modelpull/models.json.lock``) so two modelpull
processes never lose each other's entries; Docker Model Runner itself takes no
lock, so a ``docker model pull`` racing with us at the very same instant could
still drop one entry.

The runtime view of a model, ``bundles/sha256/<manifest hex>/``, is laid out
as Docker Model Runner lays it out (``internal/bundle``): the model's files in
``model/``, hard links to the blobs (a copy where the file system has no hard
links), tar layers unpacked there, and ``config.json`` (the runtime config:
the config's ``config`` object for Docker models, the whole ModelPack config
for ModelPack ones) beside ``model/``. :meth:`DockerModelStore.build_bundle`
builds it in a staging folder and renames it into place, so a bundle that
exists is whole; Docker Model Runner uses a bundle it finds with weights and
a ``config.json``, and rebuilds one it cannot read. Files are placed as
:mod:`modelpull._oci.artifacts` says (the names Docker Model Runner gives
unannotated v0.1 layers, else the ``org.cncf.model.filepath`` paths).

:class:`ModelFolder` is the same layout in any folder (``local_dir``): raw
layers at their paths, tar layers unpacked, modelpull's own notes and partial
downloads in ``<folder>/.modelpull/``.

Downloads in progress live in ``<models>/.modelpull/``, not in ``blobs/``:
Docker Model Runner treats ``blobs/sha256/<hex>.incomplete`` as its own
contiguous partial download (it appends to it and deletes it after seven
days), which our ranged, out-of-order partials are not. It ignores folders it
does not know in the store root.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from filelock import FileLock

from .._durable import fsync_dirs, write_atomic
from .._oci import DOCKER_HUB, DOCKER_HUB_NAMESPACE, Descriptor, digest_hex, parse_reference
from .._oci import parse_manifest as _parse_manifest
from .._oci.artifacts import (
    ArtifactFormat,
    ArtifactLayer,
    FilePlacement,
    ModelArtifact,
    UnpackPlacement,
)
from .._safepath import join_inside
from .._unpack import TarLayer, unpack_layers
from ..errors import InvalidModel, ModelNotFound, UnsafeSource
from .paths import DigestBlobs

__all__ = [
    "DockerModelStore",
    "IndexEntry",
    "ModelFolder",
    "StoredModel",
    "default_models_dir",
    "delete_local",
    "dmr_tag",
    "list_local",
]

LAYOUT_VERSION = "1.0.0"
DEFAULT_REGISTRY = DOCKER_HUB
DEFAULT_ORG = DOCKER_HUB_NAMESPACE
_WORK_DIR = ".modelpull"
_LOCK_TIMEOUT = 60.0
#: another process may be unpacking a large tar layer into the same bundle
_BUNDLE_LOCK_TIMEOUT = 3600.0
_SHORT_ID = re.compile(r"(?:sha256:)?[0-9a-f]{12}(?:[0-9a-f]{52})?")


def default_models_dir() -> Path:
    """``$MODELS_PATH``, else ``~/.docker/models``."""
    return Path(os.environ.get("MODELS_PATH") or Path.home() / ".docker" / "models").expanduser()


def dmr_tag(reference: str, default_registry: str | None = None) -> str | None:
    """The tag Docker Model Runner stores for ``reference``, e.g. ``docker.io/ai/smollm2:latest``.

    As Docker Model Runner normalises names: ``hf.co/`` becomes
    ``huggingface.co/``; a bare name gets the ``ai/`` organisation; the name
    (not the tag) is lowercased; no tag means ``latest``; no registry means
    ``docker.io`` (or ``default_registry``, else ``$DEFAULT_REGISTRY``, as
    Docker Model Runner reads it). ``name:tag@sha256:…`` stores ``name:tag``.
    A reference by digest alone returns ``None``: Docker Model Runner would tag
    it ``:latest`` and so move ``latest`` away from whatever model had it; we
    store such a model untagged (it is still found by its digest). Raises
    :class:`InvalidModel` for a reference Docker would refuse.
    """
    ref = parse_reference(reference, default_registry)
    return ref.stored_tag


def short_name(tag: str) -> str:
    """A stored tag as ``docker model ls`` shows it: without ``docker.io/``."""
    return tag.removeprefix(DEFAULT_REGISTRY + "/")


@dataclass(frozen=True)
class IndexEntry:
    """One model in ``models.json``."""

    id: str
    tags: tuple[str, ...]
    files: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "tags": list(self.tags), "files": list(self.files)}


@dataclass(frozen=True)
class StoredModel:
    """A model read back from the store."""

    id: str
    tags: tuple[str, ...]
    manifest: bytes
    config: bytes
    #: the config first, then the layers in manifest order
    blobs: tuple[Descriptor, ...]
    manifest_path: Path


class DockerModelStore(DigestBlobs):
    """Paths inside one Docker Model Runner store; writes its JSON files atomically."""

    def __init__(self, models_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(models_dir).expanduser() if models_dir else default_models_dir()
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.bundles = self.root / "bundles"
        self.index_path = self.root / "models.json"
        self.layout_path = self.root / "layout.json"
        self.work = self.root / _WORK_DIR

    # -- blobs -------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / "sha256" / digest_hex(digest)


    def write_blob(self, digest: str, data: bytes) -> Path:
        """Store a small blob (the config) from memory, atomically, after checking its sha256."""
        return _write_verified(self.blob_path(digest), digest, data)

    # -- the runtime bundle ------------------------------------------------
    def bundle_path(self, model_id: str) -> Path:
        """``bundles/sha256/<hex>``: the runtime view of model ``sha256:<hex>``."""
        return self.bundles / "sha256" / digest_hex(model_id)

    def model_folder(self, model_id: str) -> Path:
        """``bundles/sha256/<hex>/model``: the folder holding the model's files."""
        return self.bundle_path(model_id) / "model"

    def build_bundle(self, model_id: str, artifact: ModelArtifact, config: bytes) -> Path:
        """Lay out the runtime view of a model whose blobs are all in the store; return its model folder.

        A bundle already there (built by us or by Docker Model Runner) is kept.
        Raw layers are hard-linked from ``blobs/``, tar layers unpacked after
        the checks of :mod:`modelpull._unpack` (:class:`UnsafeSource` leaves no
        bundle behind). Raises :class:`RuntimeError` when a blob is missing.
        """
        final = self.bundle_path(model_id)
        folder = final / "model"
        if folder.is_dir():
            return folder
        self.work.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.work / f"bundle-{digest_hex(model_id)}.lock"), timeout=_BUNDLE_LOCK_TIMEOUT):
            if folder.is_dir():
                return folder
            missing = [layer.digest for layer in artifact.layers if not self.has_blob(layer.digest, layer.size)]
            if missing:
                raise RuntimeError(f"blobs missing from the store, refusing to build the bundle: {missing}")
            final.parent.mkdir(parents=True, exist_ok=True)
            staging = final.parent / f".{final.name}.{secrets.token_hex(6)}"
            try:
                inside = staging / "model"
                inside.mkdir(parents=True)
                _lay_out(inside, artifact.layers, self.blob_path, staging_in=staging)
                runtime = runtime_config(artifact, config)
                if runtime is not None:
                    write_atomic(staging / "config.json", runtime)
                fsync_dirs([inside, staging])  # the hard links and names inside, before the bundle's own name
                if final.exists():  # an old or broken bundle: Docker Model Runner replaces it too
                    shutil.rmtree(final)
                os.rename(staging, final)
                fsync_dirs([final.parent])
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return folder

    # -- manifests and the index ------------------------------------------
    def manifest_path(self, model_id: str) -> Path:
        return self.manifests / "sha256" / digest_hex(model_id)

    def ensure_layout(self) -> None:
        """``layout.json``, then an empty ``models.json``, when missing (Docker Model Runner's order)."""
        if not self.layout_path.exists():
            write_atomic(self.layout_path, _go_json({"version": LAYOUT_VERSION}))
        if not self.index_path.exists():
            with self.index_lock():
                if not self.index_path.exists():
                    write_atomic(self.index_path, _go_json({"models": []}))

    @contextmanager
    def index_lock(self) -> Iterator[None]:
        """Hold the lock under which ``models.json`` is read and rewritten."""
        self.work.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.work / "models.json.lock"), timeout=_LOCK_TIMEOUT):
            yield

    def read_index(self) -> list[IndexEntry]:
        """The entries of ``models.json`` (none when it is missing); malformed ones are skipped."""
        try:
            data = json.loads(self.index_path.read_bytes())
        except FileNotFoundError:
            return []
        except ValueError:
            raise UnsafeSource(f"{self.index_path} is not JSON; refusing to rewrite it") from None
        models = data.get("models") if isinstance(data, dict) else None
        entries = []
        for raw in models if isinstance(models, list) else []:
            if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
                continue
            tags = raw.get("tags") or []  # Docker Model Runner writes null for an untagged model
            files = raw.get("files") or []
            entries.append(
                IndexEntry(
                    raw["id"],
                    tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
                    tuple(f for f in files if isinstance(f, str)) if isinstance(files, list) else (),
                )
            )
        return entries

    def _write_index(self, entries: Sequence[IndexEntry]) -> None:
        write_atomic(self.index_path, _go_json({"models": [e.to_json() for e in entries]}))
        if not self.layout_path.exists():  # as Docker Model Runner's writeIndex does
            write_atomic(self.layout_path, _go_json({"version": LAYOUT_VERSION}))

    def write_model(self, manifest: bytes, tags: Sequence[str] = ()) -> str:
        """Publish a model whose blobs are all in place: manifest, then index entry with ``tags``.

        ``tags`` are references (``ai/smollm2``, ``registry:5000/team/m:q4``),
        normalised with :func:`dmr_tag`. Returns the model id
        (``sha256:<manifest digest>``). Raises :class:`UnsafeSource` for a
        manifest we must not act on, :class:`InvalidModel` for a bad tag, and
        :class:`RuntimeError` when a blob is missing (blobs come first: a bug in
        the caller, refused as Docker Model Runner refuses it).
        """
        blobs = _blobs_of(manifest)
        missing = [b.digest for b in blobs if not self.has_blob(b.digest, b.size)]
        if missing:
            raise RuntimeError(f"blobs missing from the store, refusing to write the manifest: {missing}")
        normalised = []
        for tag in tags:
            stored = dmr_tag(tag)
            if stored is not None and stored not in normalised:
                normalised.append(stored)
        model_id = "sha256:" + hashlib.sha256(manifest).hexdigest()
        self.ensure_layout()
        write_atomic(self.manifest_path(model_id), manifest)
        files = tuple(b.digest for b in blobs[1:]) + (blobs[0].digest,)
        with self.index_lock():
            entries = self.read_index()
            updated: list[IndexEntry] = []
            present = False
            for entry in entries:
                if entry.id == model_id:
                    present = True
                    kept = entry.tags + tuple(t for t in normalised if t not in entry.tags)
                    updated.append(IndexEntry(entry.id, kept, entry.files))
                else:
                    others = tuple(t for t in entry.tags if t not in normalised)
                    updated.append(IndexEntry(entry.id, others, entry.files))
            if not present:
                updated.append(IndexEntry(model_id, tuple(normalised), files))
            self._write_index(updated)
        return model_id

    def find(self, reference: str) -> IndexEntry | None:
        """The index entry a tag, a model id or a 12-hex short id names, as Docker Model Runner matches them."""
        entries = self.read_index()
        text = reference.strip()
        if _SHORT_ID.fullmatch(text):
            hexa = text.removeprefix("sha256:")
            for entry in entries:
                if entry.id.removeprefix("sha256:").startswith(hexa):
                    return entry
        try:
            wanted = dmr_tag(text)
        except InvalidModel:
            return None
        if wanted is None:  # name@sha256:… : the digest decides
            digest = text.partition("@")[2]
            return next((e for e in entries if e.id == digest), None)
        for entry in entries:
            if any(_tag_or_none(tag) == wanted for tag in entry.tags):
                return entry
        return None

    def read_model(self, reference: str) -> StoredModel:
        """The manifest, config and blob list of a stored model; :class:`ModelNotFound` if absent."""
        entry = self.find(reference)
        if entry is None:
            raise ModelNotFound(f"{reference} is not in the Docker model store at {self.root}")
        path = self.manifest_path(entry.id)
        try:
            manifest = path.read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(f"{reference} is listed in {self.index_path} but its manifest is missing") from None
        if "sha256:" + hashlib.sha256(manifest).hexdigest() != entry.id:
            raise UnsafeSource(f"the stored manifest of {reference} does not match its id {entry.id}")
        blobs = _blobs_of(manifest)
        try:
            config = self.blob_path(blobs[0].digest).read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(f"the config blob of {reference} is missing from {self.root}") from None
        return StoredModel(entry.id, entry.tags, manifest, config, tuple(blobs), path)


def list_local(models_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The models in a Docker Model Runner store, one dict per model (as in ``models.json``).

    Keys: ``name`` (first tag as ``docker model ls`` shows it, e.g.
    ``ai/smollm2:latest``, or the 12-hex id of an untagged model), ``tags`` (as
    stored), ``id`` and ``digest`` (``sha256:<manifest digest>``), ``size``
    (bytes of the config and every layer), ``path`` (the manifest file),
    ``modified`` (its POSIX mtime), ``layers`` (count), ``complete`` (every
    blob present with its size), ``bundle`` (the folder holding the model's
    files, None until a runtime bundle is built) and ``format`` (``gguf``,
    ``safetensors``… as the config says, else None). Entries whose manifest is
    unreadable are skipped.
    """
    store = DockerModelStore(models_dir)
    models: list[dict[str, Any]] = []
    for entry in store.read_index():
        try:
            path = store.manifest_path(entry.id)
            body = path.read_bytes()
            blobs = _blobs_of(body)
            modified = path.stat().st_mtime
        except (OSError, UnsafeSource):
            continue
        folder = store.model_folder(entry.id)
        models.append(
            {
                "name": short_name(entry.tags[0]) if entry.tags else entry.id.removeprefix("sha256:")[:12],
                "tags": list(entry.tags),
                "id": entry.id,
                "digest": entry.id,
                "size": sum(b.size for b in blobs),
                "path": str(path),
                "modified": modified,
                "layers": len(blobs) - 1,
                "complete": all(store.has_blob(b.digest, b.size) for b in blobs),
                "bundle": str(folder) if folder.is_dir() else None,
                "format": _format_of(store.blob_path(blobs[0].digest)),
            }
        )
    return models


def delete_local(name: str, models_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Remove a model as ``docker model rm`` does (without ``--force``).

    ``name`` is a tag (``ai/smollm2``), a model id or a 12-hex short id. When
    ``name`` is one of several tags of the model, only that tag is removed.
    Otherwise the manifest, the runtime bundle, the index entry and every blob
    no other model in ``models.json`` lists are removed. Returns ``{"name",
    "id", "untagged", "deleted", "path", "removed_blobs", "freed_bytes"}``.
    Raises :class:`ModelNotFound` when the store has no such model.
    """
    store = DockerModelStore(models_dir)
    with store.index_lock():
        entry = store.find(name)
        if entry is None:
            raise ModelNotFound(f"{name} is not in the Docker model store at {store.root}")
        entries = store.read_index()
        path = store.manifest_path(entry.id)
        wanted = _tag_or_none(name)
        if wanted is not None and wanted in entry.tags and len(entry.tags) > 1:
            store._write_index(
                [IndexEntry(e.id, tuple(t for t in e.tags if t != wanted), e.files) if e.id == entry.id else e
                 for e in entries]
            )
            return {"name": short_name(wanted), "id": entry.id, "untagged": [wanted], "deleted": False,
                    "path": str(path), "removed_blobs": [], "freed_bytes": 0}
        keep = {f for e in entries if e.id != entry.id for f in e.files}
        store._write_index([e for e in entries if e.id != entry.id])
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        shutil.rmtree(store.bundles / "sha256" / digest_hex(entry.id), ignore_errors=True)
        removed: list[str] = []
        freed = 0
        for digest in dict.fromkeys(entry.files):
            if digest in keep:
                continue
            try:
                blob = store.blob_path(digest)
                size = blob.stat().st_size
                blob.unlink()
            except (FileNotFoundError, UnsafeSource):
                continue
            removed.append(digest)
            freed += size
    shown = short_name(entry.tags[0]) if entry.tags else entry.id
    return {"name": shown, "id": entry.id, "untagged": list(entry.tags), "deleted": True,
            "path": str(path), "removed_blobs": removed, "freed_bytes": freed}


# -- model folders ---------------------------------------------------------------


class ModelFolder(DigestBlobs):
    """A model's files laid out by their paths in a folder of the caller's (``local_dir``).

        <folder>/<path>                          every raw layer, at its path
        <folder>/<paths inside a tar layer>      every tar layer, unpacked
        <folder>/.modelpull/layers.json          which layer each file came from
        <folder>/.modelpull/blobs/sha256-<hex>   the config, and tar layers until unpacked
        <folder>/.modelpull/sha256-<hex>.partial downloads in progress (and their locks)

    A file counts as present only when ``layers.json`` says it came from the
    same digest and it still has its size; anything else at its path is
    replaced. Nothing is written outside the folder.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self.work = self.root / _WORK_DIR
        self.record_path = self.work / "layers.json"

    def blob_path(self, digest: str) -> Path:
        return self.work / "blobs" / f"sha256-{digest_hex(digest)}"

    def file_path(self, path: PurePosixPath) -> Path:
        """Where a raw layer's file goes (never outside the folder, not through a symbolic link)."""
        return join_inside(self.root, path.as_posix())

    def write_blob(self, digest: str, data: bytes) -> Path:
        """Keep a small blob (the config) from memory, atomically, after checking its sha256."""
        return _write_verified(self.blob_path(digest), digest, data)

    def has_layer(self, layer: ArtifactLayer) -> bool:
        """Is this layer's content in the folder already (placed or unpacked from this very digest)?"""
        record = self._read_record()
        if isinstance(layer.placement, FilePlacement):
            path = layer.placement.path.as_posix()
            return record["files"].get(path) == layer.digest and _has_size(self.root / path, layer.size)
        unpacked = record["unpacked"].get(layer.digest)
        if not isinstance(unpacked, list):
            return False
        return all(
            isinstance(item, list) and len(item) == 2 and _has_size(self.root / str(item[0]), item[1])
            for item in unpacked
        )

    def lay_out(self, artifact: ModelArtifact, fetched: set[str]) -> Path:
        """Place what is not placed yet: copies of raw files named twice, tar layers unpacked.

        ``fetched`` holds the digests whose raw files the engine has just put
        at their first path. Tar layers wait in ``.modelpull/blobs/`` and are
        removed once unpacked. Returns the folder.
        """
        first: dict[str, PurePosixPath] = {}
        for layer in artifact.layers:
            if isinstance(layer.placement, FilePlacement):
                first.setdefault(layer.digest, layer.placement.path)
        files: dict[str, str] = {}
        for layer in artifact.layers:
            if not isinstance(layer.placement, FilePlacement):
                continue
            path = layer.placement.path
            files[path.as_posix()] = layer.digest
            origin = first[layer.digest]
            if path != origin and (layer.digest in fetched or not self.has_layer(layer)):
                target = self.file_path(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.file_path(origin), target)
        self._update_record(files=files)
        tars = [layer for layer in artifact.layers
                if isinstance(layer.placement, UnpackPlacement) and self.has_blob(layer.digest, layer.size)]
        reserved = [PurePosixPath(p) for p in files]
        written = unpack_layers(
            self.root,
            [_tar_layer(layer, self.blob_path) for layer in tars],
            reserved=reserved,
            staging_in=self.work,
        )
        for layer, paths in zip(tars, written):
            sizes = [[p.as_posix(), (self.root / p.as_posix()).stat().st_size] for p in paths]
            self._update_record(unpacked={layer.digest: sizes})
            self.blob_path(layer.digest).unlink(missing_ok=True)
        return self.root

    def _read_record(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.record_path.read_bytes())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        files = data.get("files")
        unpacked = data.get("unpacked")
        return {"files": files if isinstance(files, dict) else {},
                "unpacked": unpacked if isinstance(unpacked, dict) else {}}

    def _update_record(
        self, files: Mapping[str, str] | None = None, unpacked: Mapping[str, list[list[Any]]] | None = None
    ) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.work / "layers.json.lock"), timeout=_LOCK_TIMEOUT):
            record = self._read_record()
            record["files"].update(files or {})
            record["unpacked"].update(unpacked or {})
            write_atomic(self.record_path, json.dumps(record, indent=1, sort_keys=True).encode())


def _lay_out(
    folder: Path, layers: Sequence[ArtifactLayer], blob_path: Callable[[str], Path], *, staging_in: Path
) -> None:
    """Raw layers at their paths (hard links to their blobs), then tar layers unpacked."""
    placed: list[PurePosixPath] = []
    for layer in layers:
        if not isinstance(layer.placement, FilePlacement):
            continue
        path = layer.placement.path
        if path in placed:
            continue  # the same blob named twice at one path
        target = folder.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(blob_path(layer.digest), target)
        placed.append(path)
    tars = [_tar_layer(layer, blob_path) for layer in layers if isinstance(layer.placement, UnpackPlacement)]
    unpack_layers(folder, tars, reserved=placed, staging_in=staging_in)


def _tar_layer(layer: ArtifactLayer, blob_path: Callable[[str], Path]) -> TarLayer:
    assert isinstance(layer.placement, UnpackPlacement)
    return TarLayer(blob_path(layer.digest), layer.placement.folder, layer.placement.compression)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        shutil.copyfile(source, target)


def _has_size(path: Path, size: object) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


# -- the runtime config --------------------------------------------------------------

# Docker Model Runner's types.Config, in its field order (each omitted when empty).
_RUNTIME_FIELDS = ("format", "quantization", "parameters", "architecture", "size", "gguf", "safetensors",
                   "diffusers", "context_size")


def runtime_config(artifact: ModelArtifact, config: bytes) -> bytes | None:
    """The bundle's ``config.json`` as Docker Model Runner writes it (``json.Encoder``: compact, a newline).

    Docker models: the config's ``config`` object; ModelPack (and KitOps'
    ModelPack form): the whole ModelPack config; a KitOps ModelKit in its own
    types (which Docker Model Runner does not pull itself): a Docker config
    naming the Kitfile's model format. None when the config is not a JSON object.
    """
    try:
        data = json.loads(config)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    runtime: dict[str, Any]
    if artifact.format in (ArtifactFormat.MODELPACK, ArtifactFormat.KITOPS_MODELPACK):
        runtime = {key: data[key] for key in ("descriptor", "modelfs", "config") if key in data}
    elif artifact.format is ArtifactFormat.KITOPS:
        runtime = {"format": artifact.model_format} if artifact.model_format else {}
    else:
        inner = data.get("config")
        inner = inner if isinstance(inner, dict) else {}
        runtime = {key: inner[key] for key in _RUNTIME_FIELDS if inner.get(key) not in (None, "", {}, [])}
        for key in ("gguf", "safetensors", "diffusers"):
            if isinstance(runtime.get(key), dict):
                runtime[key] = dict(sorted(runtime[key].items()))
    return _go_compact_json(runtime) + b"\n"


def _format_of(config_blob: Path) -> str | None:
    """The weights' format a stored config names (Docker/ModelPack ``config.format``, Kitfile ``model.format``)."""
    try:
        data = json.loads(config_blob.read_bytes())
    except (OSError, ValueError):
        return None
    for outer in ("config", "model"):
        inner = data.get(outer) if isinstance(data, dict) else None
        value = inner.get("format") if isinstance(inner, dict) else None
        if isinstance(value, str) and value:
            return value.lower()
    return None


def _blobs_of(manifest: bytes) -> list[Descriptor]:
    """The config, then every layer, each checked."""
    return _parse_manifest(manifest).blobs


def find_blob(sha256: str, size: int, models_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The store's blob with these bytes, if it has it (``blobs/sha256/<hex>``)."""
    from .paths import check_sha256_hex, with_size

    return with_size([DockerModelStore(models_dir).blob_path("sha256:" + check_sha256_hex(sha256))], size)


def _tag_or_none(reference: str) -> str | None:
    try:
        return dmr_tag(reference)
    except InvalidModel:
        return None


def _go_json(data: Any) -> bytes:
    """JSON as Go's ``json.MarshalIndent(v, "", "  ")`` writes it (no newline at the end)."""
    return _go_escaped(json.dumps(data, indent=2, ensure_ascii=False))


def _go_compact_json(data: Any) -> bytes:
    """JSON as Go's ``json.Marshal`` writes it."""
    return _go_escaped(json.dumps(data, separators=(",", ":"), ensure_ascii=False))


def _go_escaped(text: str) -> bytes:
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


def _write_verified(path: Path, digest: str, data: bytes) -> Path:
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise UnsafeSource(f"the blob given as {digest} does not match its digest; refusing it")
    write_atomic(path, data)
    return path


