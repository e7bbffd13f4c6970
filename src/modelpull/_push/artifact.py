"""A model's files as an OCI artifact: CNCF ModelPack or a Docker model (config v0.2).

:func:`build_artifact` turns a list of files (path in the model folder, size,
sha256) into the config blob, one layer per file and the manifest, in the
shape PROTOCOLS.md §8 and §9 describe:

* **ModelPack**: manifest ``artifactType`` ``application/vnd.cncf.model.manifest.v1+json``,
  config ``application/vnd.cncf.model.config.v1+json`` with ``descriptor``,
  ``config`` and ``modelfs`` (``diffIds`` = the layer digests); every file is a
  raw layer (``…weight.v1.raw``, ``…weight.config.v1.raw``, ``…doc.v1.raw``,
  ``…code.v1.raw``): weights uncompressed and one per layer as the spec asks,
  small files raw as well, so each lands at its exact path with its exact bytes.
* **Docker** (Docker Model Runner): no ``artifactType``, config
  ``application/vnd.docker.ai.model.config.v0.2+json`` with ``config``,
  ``descriptor.created`` and ``rootfs.diff_ids``; one layer per file with its
  ``vnd.docker.ai.*`` type (``gguf.v3``, ``safetensors``, ``mmproj``,
  ``license``, ``chat.template.jinja``, ``dduf``, else ``model.file``).

Every layer carries ``org.cncf.model.filepath`` (its relative path),
``org.cncf.model.file.metadata+json`` (name, mode 0644, uid/gid 0, size,
mtime, typeflag ``'0'``) and ``org.cncf.model.file.mediatype.untested``
(``"true"``: the kind comes from the file's name).

Deterministic: layers sorted by path, JSON with sorted keys and no spaces,
every time the one ``created`` time (the source's own when it records one,
else the Unix epoch), nothing from the machine. The same files give the same
manifest digest, on any machine.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any

from .._oci import OCI_MANIFEST
from .._oci.artifacts import (
    ANNOTATION_FILEPATH,
    DOCKER_CONFIG_V02,
    MODELPACK_ARTIFACT,
    MODELPACK_CONFIG,
)

__all__ = [
    "EPOCH",
    "ArtifactFile",
    "BuiltArtifact",
    "Format",
    "ModelInfo",
    "build_artifact",
    "placeholder_digest",
]

EPOCH = "1970-01-01T00:00:00Z"
ANNOTATION_METADATA = "org.cncf.model.file.metadata+json"
ANNOTATION_UNTESTED = "org.cncf.model.file.mediatype.untested"

_DOCKER = "application/vnd.docker.ai."
_MODELPACK = "application/vnd.cncf.model."
_WEIGHTS = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".dduf", ".npz", ".h5",
            ".msgpack", ".pdparams", ".tflite", ".mlmodel", ".nemo", ".llamafile")
_DOCS = re.compile(r"(^|/)(readme|license|licence|copying|notice|use_policy|model_card)[^/]*$|\.(md|rst|txt|pdf)$",
                   re.IGNORECASE)
_LICENSE = re.compile(r"(^|/)(license|licence|copying)[^/]*$", re.IGNORECASE)
_CODE = re.compile(r"\.(py|ipynb|sh|js|ts|go|rs|c|cc|cpp|h)$", re.IGNORECASE)


class Format(str, Enum):
    """What a push writes."""

    MODELPACK = "modelpack"
    DOCKER = "docker"


@dataclass(frozen=True)
class ArtifactFile:
    """One file of the model: where it lands, where it is now, its size and sha256."""

    path: PurePosixPath
    disk: Path
    size: int
    digest: str
    #: what the source says it is (an Ollama layer's kind: ``model``, ``projector``…), if anything
    kind: str | None = None


@dataclass
class ModelInfo:
    """What the config says about the model, all of it from the source (nothing from the machine)."""

    name: str
    created: str = EPOCH
    #: ``gguf``, ``safetensors``, ``dduf`` (None: judged from the files)
    format: str | None = None
    quantization: str | None = None
    architecture: str | None = None
    family: str | None = None
    revision: str | None = None
    source_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltArtifact:
    """The blobs and manifest of one push, ready to upload."""

    format: Format
    manifest: bytes
    media_type: str
    config: bytes
    config_media_type: str
    #: the layers in manifest order, each with the file it is made of
    layers: tuple[tuple[dict[str, Any], ArtifactFile], ...]

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    @property
    def config_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()

    @property
    def total_size(self) -> int:
        """Bytes of every blob: the layers and the config (each blob once)."""
        seen: dict[str, int] = {self.config_digest: len(self.config)}
        for descriptor, _ in self.layers:
            seen[descriptor["digest"]] = descriptor["size"]
        return sum(seen.values())

    def descriptor(self) -> dict[str, Any]:
        """The manifest as an index or a layout names it."""
        entry: dict[str, Any] = {"mediaType": self.media_type, "digest": self.manifest_digest,
                                 "size": len(self.manifest)}
        if self.format is Format.MODELPACK:
            entry["artifactType"] = MODELPACK_ARTIFACT
        return entry


def placeholder_digest(path: PurePosixPath) -> str:
    """A stand-in digest of the right length, for sizing a config before every file is hashed."""
    return "sha256:" + hashlib.sha256(b"modelpull placeholder " + path.as_posix().encode()).hexdigest()


def build_artifact(files: Sequence[ArtifactFile], info: ModelInfo, fmt: Format) -> BuiltArtifact:
    """The manifest, config and layers of ``files`` in format ``fmt`` (see the module docstring)."""
    ordered = sorted(files, key=lambda f: f.path.as_posix())
    weights_format = info.format or _weights_format(ordered)
    layers: list[tuple[dict[str, Any], ArtifactFile]] = []
    licenses = [f for f in ordered if _LICENSE.search(f.path.as_posix()) or f.kind == "license"]
    for f in ordered:
        media_type = _modelpack_type(f) if fmt is Format.MODELPACK else _docker_type(f, licenses)
        layers.append(({"mediaType": media_type, "digest": f.digest, "size": f.size,
                        "annotations": _annotations(f, info.created)}, f))
    diff_ids = [descriptor["digest"] for descriptor, _ in layers]
    if fmt is Format.MODELPACK:
        config = _modelpack_config(info, weights_format, diff_ids)
        config_type = MODELPACK_CONFIG
    else:
        config = _docker_config(info, weights_format, diff_ids, sum(f.size for f in ordered))
        config_type = DOCKER_CONFIG_V02
    config_bytes = _json(config)
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if fmt is Format.MODELPACK:
        manifest["artifactType"] = MODELPACK_ARTIFACT
    manifest["config"] = {"mediaType": config_type, "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                          "size": len(config_bytes)}
    manifest["layers"] = [descriptor for descriptor, _ in layers]
    return BuiltArtifact(fmt, _json(manifest), OCI_MANIFEST, config_bytes, config_type, tuple(layers))


def _json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _annotations(f: ArtifactFile, created: str) -> dict[str, str]:
    metadata = {"name": f.path.name, "mode": 0o644, "uid": 0, "gid": 0, "size": f.size, "mtime": created,
                "typeflag": ord("0")}
    return {
        ANNOTATION_FILEPATH: f.path.as_posix(),
        ANNOTATION_METADATA: _json(metadata).decode(),
        ANNOTATION_UNTESTED: "true",
    }


def _is_weights(f: ArtifactFile) -> bool:
    return f.kind in ("model", "projector", "adapter") or f.path.suffix.lower() in _WEIGHTS


def _is_projector(f: ArtifactFile) -> bool:
    return f.kind == "projector" or "mmproj" in f.path.name.lower()


def _modelpack_type(f: ArtifactFile) -> str:
    text = f.path.as_posix()
    if _is_weights(f):
        kind = "weight"
    elif f.kind == "license" or _DOCS.search(text):
        kind = "doc"
    elif _CODE.search(text):
        kind = "code"
    else:
        kind = "weight.config"  # config.json, tokenizer files, chat templates, params
    return f"{_MODELPACK}{kind}.v1.raw"


def _docker_type(f: ArtifactFile, licenses: list[ArtifactFile]) -> str:
    suffix = f.path.suffix.lower()
    if _is_projector(f) and (suffix == ".gguf" or f.kind == "projector"):
        return _DOCKER + "mmproj"
    if suffix == ".gguf" or f.kind in ("model", "adapter"):
        return _DOCKER + "gguf.v3"
    if suffix == ".safetensors":
        return _DOCKER + "safetensors"
    if suffix == ".dduf":
        return _DOCKER + "dduf"
    if f in licenses:
        return _DOCKER + "license"
    if suffix == ".jinja":
        return _DOCKER + "chat.template.jinja"
    return _DOCKER + "model.file"


def _weights_format(files: Sequence[ArtifactFile]) -> str | None:
    suffixes = {f.path.suffix.lower() for f in files if not _is_projector(f)}
    if ".gguf" in suffixes or any(f.kind == "model" for f in files):
        return "gguf"
    if ".safetensors" in suffixes:
        return "safetensors"
    if ".dduf" in suffixes:
        return "dduf"
    return None


def _model_fields(info: ModelInfo, weights: str | None) -> dict[str, Any]:
    """What both formats' ``config`` say of the weights (the same names in both)."""
    fields = {"format": weights, "quantization": info.quantization, "architecture": info.architecture}
    return {key: value for key, value in fields.items() if value}


def _modelpack_config(info: ModelInfo, weights: str | None, diff_ids: list[str]) -> dict[str, Any]:
    descriptor: dict[str, Any] = {"createdAt": info.created, "name": info.name}
    if info.family:
        descriptor["family"] = info.family
    if info.revision:
        descriptor["revision"] = info.revision
    if info.source_url:
        descriptor["sourceURL"] = info.source_url
    return {"descriptor": descriptor, "config": _model_fields(info, weights),
            "modelfs": {"type": "layers", "diffIds": diff_ids}}


def _docker_config(info: ModelInfo, weights: str | None, diff_ids: list[str], size: int) -> dict[str, Any]:
    config: dict[str, Any] = {"size": str(size), **_model_fields(info, weights)}
    return {"config": config, "descriptor": {"created": info.created},
            "rootfs": {"type": "rootfs", "diff_ids": diff_ids}}
