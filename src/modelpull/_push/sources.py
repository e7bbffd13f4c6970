"""The model to push, as files on disk: found in its source's store, or planned to be pulled first.

Every source modelpull pulls from keeps its models in a store it knows
(``LocalCopy``); this module turns what a store holds into the files of the
model, each with the path it has in the model folder, where it is on disk,
its size and, when the store verified one, its sha256:

* the Hub family (``huggingface``, ``mlx``, ``gguf``, ``lmstudio``,
  ``modelscope``): the files of the snapshot the source would serve, at their
  repo paths, from the store's own files (a sha256 for every LFS file, as the
  Hub gave it and as it was checked on download);
* ``ollama-registry``: the layers of the model's manifest in Ollama's store,
  named by what they are (:data:`OLLAMA_NAMES`: ``model.gguf``, ``mmproj.gguf``,
  ``template``, ``params.json``…), their digests the blob names;
* ``oci``: the model's files in Docker Model Runner's store (its runtime
  bundle's ``model/`` folder), raw layers with their layer digests.

When the store does not hold the whole model, :func:`planned_files` says what
the source's plan will put there, so one progress total covers pulling it and
pushing it; :func:`fetched_files` reads the files once the pull is done.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .._oci import digest_hex, parse_manifest
from .._oci.artifacts import FilePlacement, UnpackPlacement, describe_artifact
from ..errors import IncompatibleModel, InvalidModel, ModelNotFound, ModelpullError
from ..plan import Plan
from ..providers.base import Provider
from .artifact import EPOCH, ModelInfo

__all__ = ["OLLAMA_NAMES", "LocalModel", "SourceFile", "fetched_files", "local_model", "planned_files"]

#: the file an Ollama layer becomes (``application/vnd.ollama.image.<kind>``)
OLLAMA_NAMES = {
    "model": "model.gguf",
    "projector": "mmproj.gguf",
    "adapter": "adapter.gguf",
    "template": "template",
    "system": "system",
    "params": "params.json",
    "messages": "messages.json",
    "license": "LICENSE",
}
_OLLAMA_PREFIX = "application/vnd.ollama.image."


@dataclass(frozen=True)
class SourceFile:
    """One file of the model: its path in the model folder, where it is (or will be), its size."""

    path: PurePosixPath
    disk: Path | None
    size: int
    #: ``sha256:…`` when the store already knows it (verified on download), else None
    digest: str | None = None
    kind: str | None = None


@dataclass
class LocalModel:
    """The model's files and what the source says about it."""

    files: list[SourceFile]
    info: ModelInfo
    #: where the model is on this machine (a snapshot folder, a manifest, a bundle)
    where: str
    #: the repository the blobs came from on their registry, for a cross-repository mount
    origin: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)


async def local_model(prov: Provider) -> LocalModel | None:
    """The whole model as its source's store holds it (no network), or None when something is missing."""
    from ..providers._repo import RepoPlanDetail, RepoProvider
    from ..providers.oci import OciProvider
    from ..providers.ollama_registry import OllamaRegistryProvider

    if isinstance(prov, OciProvider):
        return await asyncio.to_thread(_docker_store_model, prov)
    if isinstance(prov, OllamaRegistryProvider):
        return _ollama_model(prov)
    copy = await prov.local_copy()
    if copy is None or not copy.complete:
        return None
    if isinstance(prov, RepoProvider) and isinstance(copy.plan.detail, RepoPlanDetail):
        return _repo_model(prov, copy.plan)
    return None


def planned_files(prov: Provider, plan: Plan) -> list[SourceFile]:
    """The files a pull of ``plan`` will leave on disk (paths and sizes; digests where known)."""
    from ..providers._repo import RepoPlanDetail
    from ..providers.oci import OciPlanDetail
    from ..providers.ollama_registry import RegistryPlanDetail

    detail = plan.detail
    if isinstance(detail, RepoPlanDetail):
        return [SourceFile(PurePosixPath(f.path), None, f.size, _sha256(f.digest)) for f in detail.selection.files]
    if isinstance(detail, RegistryPlanDetail):
        return [SourceFile(PurePosixPath(name), None, layer.size, layer.digest, kind)
                for name, kind, layer in _ollama_names(detail.layers[1:])]
    if isinstance(detail, OciPlanDetail):
        if detail.artifact is None:
            raise IncompatibleModel(f"{plan.model} is an image index, not one model; push one of its entries by digest")
        files = []
        for layer in detail.artifact.layers:
            if isinstance(layer.placement, FilePlacement):
                files.append(SourceFile(layer.placement.path, None, layer.size, layer.digest))
            elif isinstance(layer.placement, UnpackPlacement):
                # Its files are known once it is unpacked; its own size stands in for theirs until then.
                files.append(SourceFile(PurePosixPath(f".tar-{digest_hex(layer.digest)[:12]}"), None, layer.size))
        return files
    raise IncompatibleModel(f"modelpull cannot push models from the {prov.name} source")


async def fetched_files(prov: Provider, plan: Plan, path: str) -> LocalModel:
    """The model's files once a pull of ``plan`` is done (``path``: what the pull returned)."""
    from ..providers._repo import RepoPlanDetail, RepoProvider
    from ..providers.oci import OciPlanDetail, OciProvider
    from ..providers.ollama_registry import OllamaRegistryProvider

    if isinstance(prov, RepoProvider) and isinstance(plan.detail, RepoPlanDetail):
        return _repo_model(prov, plan)
    if isinstance(prov, OllamaRegistryProvider):
        found = _ollama_model(prov)
    elif isinstance(prov, OciProvider) and isinstance(plan.detail, OciPlanDetail):
        found = await asyncio.to_thread(_pulled_oci_model, prov, plan.detail, Path(path))
    else:
        found = None
    if found is None:
        raise ModelNotFound(f"{plan.model} was pulled to {path}, but its files are not all there; run the push again")
    return found


# -- the Hub family ----------------------------------------------------------------------

def _repo_model(prov: Any, plan: Plan) -> LocalModel:
    detail: Any = plan.detail
    files = []
    for f in detail.selection.files:
        disk = Path(prov.store.file_path(detail.commit, f.path, f.etag))
        files.append(SourceFile(PurePosixPath(f.path), disk, f.size, _sha256(f.digest)))
    info = ModelInfo(name=prov.repo_id, revision=detail.commit, quantization=detail.selection.label)
    return LocalModel(files, info, plan.destination or "")


def _sha256(digest: str | None) -> str | None:
    return digest if digest and digest.startswith("sha256:") else None


# -- Ollama's store --------------------------------------------------------------------------

def _ollama_names(layers: list[Any]) -> list[tuple[str, str, Any]]:
    """(file name, kind, layer) for each layer but the config, each name once."""
    taken: dict[str, int] = {}
    named = []
    seen: set[str] = set()
    for layer in layers:
        if layer.digest in seen:
            continue
        seen.add(layer.digest)
        kind = layer.media_type.removeprefix(_OLLAMA_PREFIX) if layer.media_type.startswith(_OLLAMA_PREFIX) else ""
        kind = "".join(c for c in kind if c.isalnum() or c in "._-")[:40] or "layer"
        base = OLLAMA_NAMES.get(kind, kind)
        count = taken.get(base, 0) + 1
        taken[base] = count
        if count > 1:
            stem, dot, ext = base.partition(".")
            base = f"{stem}-{count}{dot}{ext}"
        named.append((base, kind, layer))
    return named


def _ollama_model(prov: Any) -> LocalModel | None:
    store, ref = prov.store, prov.ref
    path = store.manifest_path(ref)
    try:
        manifest = parse_manifest(path.read_bytes())
    except (OSError, ModelpullError):
        return None
    if not all(store.has_blob(blob.digest, blob.size) for blob in manifest.blobs):
        return None
    files = [SourceFile(PurePosixPath(name), store.blob_path(layer.digest), layer.size, layer.digest, kind)
             for name, kind, layer in _ollama_names(manifest.layers)]
    if not any(f.kind == "model" for f in files):
        raise IncompatibleModel(f"{ref.short} in {store.root} has no model layer; there are no weights to push")
    info = ModelInfo(name=ref.short, revision="sha256:" + _sha256_of(path))
    try:
        config = json.loads(store.blob_path(manifest.config.digest).read_bytes())
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict):
        info.format = _text(config.get("model_format")) or "gguf"
        info.family = _text(config.get("model_family"))
        info.quantization = _text(config.get("file_type"))
    return LocalModel(files, info, str(path), origin=None)


def _sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# -- Docker Model Runner's store ---------------------------------------------------------------

def _docker_store_model(prov: Any) -> LocalModel | None:
    if prov.folder is not None or getattr(prov, "layout", None) is not None:
        return None  # a folder or a layout is read through a pull (it finds what is there already)
    try:
        stored = prov.store.read_model(prov.model)
    except (ModelpullError, OSError):
        return None
    try:
        artifact = describe_artifact(json.loads(stored.manifest), stored.config)
    except (ModelpullError, ValueError):
        return None
    if not all(prov.store.has_blob(layer.digest, layer.size) for layer in artifact.layers):
        return None
    try:
        folder = prov.store.build_bundle(stored.id, artifact, stored.config)
    except (RuntimeError, ModelpullError, OSError):
        return None
    origin = (prov.ref.registry_host, prov.ref.repository)
    return _folder_model(folder, artifact, stored.config, prov.ref.short, origin)


def _pulled_oci_model(prov: Any, detail: Any, folder: Path) -> LocalModel | None:
    origin = None if getattr(prov, "layout", None) is not None else (prov.ref.registry_host, prov.ref.repository)
    return _folder_model(folder, detail.artifact, detail.config_bytes, prov.ref.short if origin else prov.model,
                         origin)


def _folder_model(folder: Path, artifact: Any, config: bytes, name: str, origin: tuple[str, str] | None) -> LocalModel:
    raw = {layer.placement.path.as_posix(): layer for layer in artifact.layers
           if isinstance(layer.placement, FilePlacement)}
    files = []
    for disk in sorted(folder.rglob("*")):
        relative = disk.relative_to(folder)
        if relative.parts[0] == ".modelpull" or disk.is_symlink() or not disk.is_file():
            continue
        key = relative.as_posix()
        layer = raw.get(key)
        size = disk.stat().st_size
        digest = layer.digest if layer is not None and layer.size == size else None
        files.append(SourceFile(PurePosixPath(key), disk, size, digest))
    if not files:
        raise InvalidModel(f"{name} has no files in {folder}; there is nothing to push")
    info = ModelInfo(name=name, format=artifact.model_format)
    try:
        data = json.loads(config)
    except ValueError:
        data = {}
    if isinstance(data, dict):
        descriptor: dict[str, Any] = data["descriptor"] if isinstance(data.get("descriptor"), dict) else {}
        created = _text(descriptor.get("created")) or _text(descriptor.get("createdAt"))
        info.created = created or EPOCH
        inner: dict[str, Any] = data["config"] if isinstance(data.get("config"), dict) else {}
        info.quantization = _text(inner.get("quantization"))
        info.architecture = _text(inner.get("architecture"))
    return LocalModel(files, info, str(folder), origin=origin)


def check_readable(files: list[SourceFile]) -> None:
    """Every file is there with its size (the store said so; a file can vanish since)."""
    for f in files:
        if f.disk is None:
            continue
        try:
            size = os.stat(f.disk).st_size
        except OSError:
            raise ModelNotFound(f"{f.disk} ({f.path}) is gone from its store; pull the model again") from None
        if size != f.size:
            raise ModelNotFound(f"{f.disk} ({f.path}) has {size} bytes, not {f.size}; pull the model again")
