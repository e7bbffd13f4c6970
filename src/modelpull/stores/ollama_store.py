"""Ollama's model store on disk, laid out exactly as an Ollama server reads it.

    <models>/blobs/sha256-<hex>                          every layer and config, by digest
    <models>/manifests/<host>/<namespace>/<model>/<tag>  the manifest exactly as served

``<models>`` is the ``models_dir`` argument, else ``$OLLAMA_MODELS``, else
``~/.ollama/models``. Downloads in progress live in ``<models>/.modelpull/``
rather than in ``blobs/``: an Ollama server starting up deletes any file in
``blobs/`` whose name is not a digest, which would destroy a resumable partial.
A manifest is written last and atomically, so a model is listed only once every
blob it names is complete and verified.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidModel, ModelNotFound, UnsafeSource
from ..refs import OllamaName, parse_ollama_name

__all__ = [
    "ManifestLayer",
    "OllamaStore",
    "default_models_dir",
    "delete_local",
    "list_local",
    "parse_manifest",
]

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
#: the largest blob we accept from a manifest (no model layer comes near it)
MAX_BLOB_SIZE = 2 << 40
#: the largest manifest we read (real ones are a few KB)
MAX_MANIFEST_SIZE = 4 << 20
_WORK_DIR = ".modelpull"


def default_models_dir() -> Path:
    """``$OLLAMA_MODELS``, else ``~/.ollama/models``."""
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def blob_hex(digest: object) -> str:
    """The hex of a ``sha256:<64 hex>`` digest; anything else is refused."""
    match = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise UnsafeSource(f"the registry gave an invalid digest {str(digest)[:80]!r}; refusing it")
    return match.group(1)


@dataclass(frozen=True)
class ManifestLayer:
    """One blob a manifest names: a layer, or the config (``is_config``)."""

    media_type: str
    digest: str
    size: int
    is_config: bool = False


def parse_manifest(body: bytes) -> list[ManifestLayer]:
    """The config and layers of an image manifest, each digest and size checked.

    Raises :class:`UnsafeSource` for a manifest we must not act on (bad digest,
    absurd size, not a schema-2 image manifest).
    """
    if len(body) > MAX_MANIFEST_SIZE:
        raise UnsafeSource(f"the registry sent a {len(body)}-byte manifest; refusing it")
    try:
        data = json.loads(body)
    except ValueError:
        raise UnsafeSource("the registry sent a manifest that is not JSON") from None
    if not isinstance(data, dict) or data.get("schemaVersion") != 2:
        raise UnsafeSource("the registry sent something that is not a schema 2 image manifest")
    config, layers = data.get("config"), data.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise UnsafeSource("the registry sent a manifest without config and layers")
    result = [_layer(config, True)] + [_layer(layer, False) for layer in layers]
    if sum(layer.size for layer in result) > MAX_BLOB_SIZE:
        raise UnsafeSource("the registry sent a manifest whose layers add up to an absurd size")
    return result


def _layer(raw: object, is_config: bool) -> ManifestLayer:
    if not isinstance(raw, dict):
        raise UnsafeSource("the registry sent a manifest with a malformed layer")
    digest, size, media_type = raw.get("digest"), raw.get("size"), raw.get("mediaType", "")
    blob_hex(digest)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_SIZE:
        raise UnsafeSource(f"the registry gave an invalid size {str(size)[:40]!r} for {digest}")
    if not isinstance(media_type, str) or len(media_type) > 200:
        raise UnsafeSource(f"the registry gave an invalid media type for {digest}")
    return ManifestLayer(media_type, str(digest), size, is_config)


class OllamaStore:
    """Paths inside one Ollama models folder; writes manifests atomically."""

    def __init__(self, models_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(models_dir).expanduser() if models_dir else default_models_dir()
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.work = self.root / _WORK_DIR

    # -- blobs -------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / f"sha256-{blob_hex(digest)}"

    def partial_path(self, digest: str) -> Path:
        return self.work / f"sha256-{blob_hex(digest)}.partial"

    def lock_path(self, digest: str) -> Path:
        return self.work / f"sha256-{blob_hex(digest)}.lock"

    def has_blob(self, digest: str, size: int) -> bool:
        """True when the blob is in the store with the expected size (verified when written)."""
        try:
            return self.blob_path(digest).stat().st_size == size
        except OSError:
            return False

    # -- manifests ---------------------------------------------------------
    def manifest_path(self, name: OllamaName) -> Path:
        # Every part was checked by parse_ollama_name: no '/', no '..', no NUL.
        return self.manifests / name.host / name.namespace / name.model / name.tag

    def write_manifest(self, name: OllamaName, body: bytes) -> Path:
        """Write ``body`` as the manifest of ``name``, atomically (never half-written)."""
        path = self.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return path

    def read_manifest(self, name: OllamaName) -> bytes | None:
        try:
            return self.manifest_path(name).read_bytes()
        except OSError:
            return None

    def manifest_files(self) -> list[tuple[OllamaName, Path]]:
        """Every manifest in the store as (name, path); stray files are skipped."""
        found: list[tuple[OllamaName, Path]] = []
        if not self.manifests.is_dir():
            return found
        for path in sorted(self.manifests.glob("*/*/*/*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            host, namespace, model, tag = path.relative_to(self.manifests).parts
            try:
                name = parse_ollama_name(f"{host}/{namespace}/{model}:{tag}")
            except InvalidModel:  # not a manifest Ollama would list either
                continue
            found.append((name, path))
        return found

    def referenced_digests(self, skip: Path | None = None) -> set[str]:
        """Digests named by every readable manifest (except ``skip``)."""
        digests: set[str] = set()
        for _, path in self.manifest_files():
            if skip is not None and path == skip:
                continue
            try:
                digests.update(layer.digest for layer in parse_manifest(path.read_bytes()))
            except (OSError, UnsafeSource):
                continue
        return digests


def list_local(models_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The models in an Ollama store, as an Ollama server would list them.

    Each dict has ``name`` (as Ollama shows it, e.g. ``gemma3:1b``), ``model``
    (fully qualified), ``size`` (bytes of the config and every layer),
    ``path`` (the manifest file), ``modified`` (POSIX timestamp of the
    manifest), ``digest`` (sha256 of the manifest, as Ollama's ID),
    ``layers`` (count) and ``complete`` (every blob present with its size).
    Unreadable manifests are skipped.
    """
    import hashlib

    store = OllamaStore(models_dir)
    models: list[dict[str, Any]] = []
    for name, path in store.manifest_files():
        try:
            body = path.read_bytes()
            layers = parse_manifest(body)
            modified = path.stat().st_mtime
        except (OSError, UnsafeSource):
            continue
        models.append(
            {
                "name": name.short,
                "model": str(name),
                "size": sum(layer.size for layer in layers),
                "path": str(path),
                "modified": modified,
                "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                "layers": len(layers) - 1,
                "complete": all(store.has_blob(layer.digest, layer.size) for layer in layers),
            }
        )
    return models


def delete_local(name: str, models_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Remove a model's manifest and every blob no other manifest references.

    Returns ``{"name", "path", "removed_blobs", "freed_bytes"}``. Raises
    :class:`~modelpull.errors.InvalidModel` for a bad name and
    :class:`~modelpull.errors.ModelNotFound` when the store has no such model.
    """
    ref = parse_ollama_name(name)
    store = OllamaStore(models_dir)
    path = store.manifest_path(ref)
    if not path.is_file():
        raise ModelNotFound(f"{ref.short} is not in the Ollama store at {store.root}")
    try:
        digests = {layer.digest for layer in parse_manifest(path.read_bytes())}
    except UnsafeSource:
        digests = set()
    keep = store.referenced_digests(skip=path)
    path.unlink()
    _prune_empty_dirs(path.parent, store.manifests)
    removed: list[str] = []
    freed = 0
    for digest in sorted(digests - keep):
        blob = store.blob_path(digest)
        try:
            size = blob.stat().st_size
            blob.unlink()
        except FileNotFoundError:
            continue
        removed.append(digest)
        freed += size
    return {"name": ref.short, "path": str(path), "removed_blobs": removed, "freed_bytes": freed}


def _prune_empty_dirs(folder: Path, stop: Path) -> None:
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
