"""Ollama's model store on disk, laid out exactly as an Ollama server reads it.

    <models>/blobs/sha256-<hex>                          every layer and config, by digest
    <models>/manifests/<host>/<namespace>/<model>/<tag>  the manifest exactly as served

``<models>`` is the ``models_dir`` argument, else ``$OLLAMA_MODELS``, else
``~/.ollama/models``. Downloads in progress live in ``<models>/.modelpull/``
rather than in ``blobs/``: an Ollama server starting up deletes any file in
``blobs/`` whose name is not a digest, which would destroy a resumable partial.
A manifest is written last and atomically, so a model is listed only once every
blob it names is complete and verified. Manifests are parsed (and checked) by
:mod:`modelpull._oci`; this module only lays out files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .. import _oci
from .._durable import write_atomic
from .._oci import Descriptor, digest_hex
from ..errors import InvalidModel, ModelNotFound, UnsafeSource
from ..refs import OllamaName, parse_ollama_name
from .paths import DigestBlobs, check_sha256_hex, shared_bytes, with_size

__all__ = [
    "OllamaStore",
    "default_models_dir",
    "delete_local",
    "list_local",
]

_WORK_DIR = ".modelpull"

def parse_manifest(body: bytes) -> list[Descriptor]:
    """The config, then every layer, each checked (``modelpull._oci.parse_manifest(body).blobs``)."""
    return _oci.parse_manifest(body).blobs


def default_models_dir() -> Path:
    """``$OLLAMA_MODELS``, else ``~/.ollama/models``."""
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


class OllamaStore(DigestBlobs):
    """Paths inside one Ollama models folder; writes manifests atomically."""

    def __init__(self, models_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(models_dir).expanduser() if models_dir else default_models_dir()
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.work = self.root / _WORK_DIR

    # -- blobs -------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / f"sha256-{digest_hex(digest)}"

    # -- manifests ---------------------------------------------------------
    def manifest_path(self, name: OllamaName) -> Path:
        # Every part was checked by parse_ollama_name: no '/', no '..', no NUL.
        return self.manifests / name.host / name.namespace / name.model / name.tag

    def write_manifest(self, name: OllamaName, body: bytes) -> Path:
        """Write ``body`` as the manifest of ``name``, atomically (never half-written)."""
        path = self.manifest_path(name)
        write_atomic(path, body)
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
                digests.update(blob.digest for blob in parse_manifest(path.read_bytes()))
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
    store = OllamaStore(models_dir)
    models: list[dict[str, Any]] = []
    for name, path in store.manifest_files():
        try:
            body = path.read_bytes()
            manifest = _oci.parse_manifest(body)
            modified = path.stat().st_mtime
        except (OSError, UnsafeSource):
            continue
        models.append(
            {
                "name": name.short,
                "model": str(name),
                "size": manifest.total_size,
                "path": str(path),
                "modified": modified,
                "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                "layers": len(manifest.layers),
                "complete": all(store.has_blob(blob.digest, blob.size) for blob in manifest.blobs),
                "shared_bytes": shared_bytes(store.blob_path(blob.digest) for blob in manifest.blobs),
            }
        )
    return models


def find_blob(sha256: str, size: int, models_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The store's blob with these bytes, if it has it (blobs are named by their sha256)."""
    return with_size([OllamaStore(models_dir).blob_path("sha256:" + check_sha256_hex(sha256))], size)


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
        digests = {blob.digest for blob in parse_manifest(path.read_bytes())}
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
