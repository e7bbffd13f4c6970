"""What a model artifact in an OCI registry holds, and where each layer lands.

:func:`describe_artifact` takes a parsed image manifest (the client has already
checked digests and sizes) and the config blob, decides the format **from the
manifest and config only, never from the name**, and returns a
:class:`ModelArtifact`: the format and, for every layer, its digest, size,
media type, role and placement. Formats (docs PROTOCOLS.md §8, §9):

* Docker model artifacts (Docker Model Runner): config
  ``application/vnd.docker.ai.model.config.v0.1+json`` or ``v0.2+json``.
* CNCF ModelPack: config ``application/vnd.cncf.model.config.v1+json``
  (``artifactType`` ``application/vnd.cncf.model.manifest.v1+json``).
* KitOps ModelKits: config ``application/vnd.kitops.modelkit.config.v1+json``
  (the Kitfile as JSON), and KitOps' ModelPack form: a ModelPack artifact whose
  manifest carries the Kitfile in the annotation ``ml.kitops.modelkit.kitfile``.

Anything else (a container image, an unknown config or artifact type) is
:class:`IncompatibleModel` naming the media type; an image index is too, with
its entries listed (:func:`index_entries`), because guessing a platform or
variant would be wrong as often as right.

Placement. A raw layer becomes one file at a relative path:

* the ``org.cncf.model.filepath`` annotation when the layer has one (current
  Docker Model Runner, ModelPack and KitOps all set it);
* else, for Docker v0.1 artifacts (older builds set no annotations), the names
  Docker Model Runner itself gives them in its runtime bundle: ``model.gguf``,
  or ``model-0000N-of-0000M.gguf`` for the GGUF layers in manifest order (the
  split naming llama.cpp looks for), ``model.safetensors`` /
  ``model-0000N-of-0000M.safetensors``, ``model.dduf``, ``model.mmproj`` and
  ``template.jinja``. Docker Model Runner does not place licenses at all; we
  name one ``LICENSE`` (then ``LICENSE-2``, …), the name people and tools look
  for, so the license travels with the weights;
* else the layer has no place in a folder (``placement is None``): it stays in
  the store only, as Docker Model Runner does with unannotated generic files and
  v0.2/ModelPack layers without a path. :attr:`ModelArtifact.notes` says so.

A tar layer is unpacked (see :mod:`modelpull._unpack`) into the model folder
itself: Docker's ``dir.tar`` and ``vllm.config.tar`` carry their folder names
inside the archive, and ModelPack tools (modctl) and KitOps store paths relative
to the model root in their tar headers. The one exception is a ModelKit packed
before KitOps 0.5, whose Kitfile entries carry no layer digest: its tar paths
are relative to the folder of the Kitfile entry's ``path``, as ``kit unpack``
does.

Every path is checked with :func:`modelpull.stores.paths.safe_relative`
(absolute paths, ``..`` and control characters are :class:`UnsafeSource`), and
two layers landing on one path (or a file where another layer needs a folder)
are :class:`UnsafeSource` too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath
from typing import Any, Literal

from .._safepath import safe_relative
from ..errors import IncompatibleModel, UnsafeSource

__all__ = [
    "ANNOTATION_FILEPATH",
    "ANNOTATION_KITFILE",
    "ArtifactFormat",
    "ArtifactLayer",
    "FilePlacement",
    "IndexEntry",
    "LayerRole",
    "ModelArtifact",
    "UnpackPlacement",
    "describe_artifact",
    "describe_index",
    "index_entries",
]

# -- media types ---------------------------------------------------------------
DOCKER_CONFIG_V01 = "application/vnd.docker.ai.model.config.v0.1+json"
DOCKER_CONFIG_V02 = "application/vnd.docker.ai.model.config.v0.2+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODELPACK_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
KITOPS_CONFIG = "application/vnd.kitops.modelkit.config.v1+json"
KITOPS_ARTIFACT = "application/vnd.kitops.modelkit.manifest.v1+json"

ANNOTATION_FILEPATH = "org.cncf.model.filepath"
ANNOTATION_KITFILE = "ml.kitops.modelkit.kitfile"

_DOCKER = "application/vnd.docker.ai."
_DOCKER_GGUF = _DOCKER + "gguf.v3"
_DOCKER_SAFETENSORS = _DOCKER + "safetensors"
_DOCKER_DDUF = _DOCKER + "dduf"
_DOCKER_MMPROJ = _DOCKER + "mmproj"
_DOCKER_LICENSE = _DOCKER + "license"
_DOCKER_TEMPLATE = _DOCKER + "chat.template.jinja"
_DOCKER_FILE = _DOCKER + "model.file"
_DOCKER_DIR_TAR = _DOCKER + "dir.tar"
_DOCKER_VLLM_TAR = _DOCKER + "vllm.config.tar"

_MODELPACK_LAYER = re.compile(
    r"application/vnd\.cncf\.model\.(weight|weight\.config|doc|code|dataset)\.v1\."
    r"(raw|tar|tar\+gzip|tar\+zstd)"
)
# Older Docker Model Runner builds wrote these two format-specific weight types.
_MODELPACK_DMR_WEIGHTS = {
    "application/vnd.cncf.model.weight.v1.gguf": "gguf",
    "application/vnd.cncf.model.weight.v1.safetensors": "safetensors",
}
_KITOPS_LAYER = re.compile(
    r"application/vnd\.kitops\.modelkit\.(model|modelpart|dataset|code|docs|mcpb)\.v1\."
    r"(raw|tar)(?:\+(gzip|zstd))?"
)

_INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_IMAGE_CONFIGS = frozenset(
    {
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    }
)
_MODEL_ROOT = PurePosixPath(".")
_SHARD_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


class ArtifactFormat(str, Enum):
    """How a model artifact is packaged."""

    DOCKER_V01 = "docker-v0.1"
    DOCKER_V02 = "docker-v0.2"
    MODELPACK = "modelpack"
    KITOPS = "kitops"
    KITOPS_MODELPACK = "kitops-modelpack"


class LayerRole(str, Enum):
    """What a layer is for a person or a runtime."""

    GGUF = "gguf"  # the one GGUF file of a model
    GGUF_SHARD = "gguf_shard"  # one part of a split GGUF model (see ArtifactLayer.shard)
    WEIGHTS = "weights"  # other weights: safetensors, DDUF, ModelPack/KitOps weight layers
    MMPROJ = "mmproj"  # multimodal projector
    LICENSE = "license"
    CHAT_TEMPLATE = "chat_template"
    CONFIG = "config"  # weight configuration: config.json, tokenizer files, vLLM config
    MODEL_PART = "model_part"  # KitOps: a file the model needs besides its weights
    FILES = "files"  # Docker dir.tar: a folder of any files
    DOC = "doc"
    CODE = "code"
    DATASET = "dataset"
    MCP_BUNDLE = "mcp_bundle"  # KitOps: an MCP server bundle (.mcpb)
    OTHER = "other"  # a layer type this version does not know; kept in the store only


@dataclass(frozen=True)
class FilePlacement:
    """The layer is one file, stored at ``path`` inside the model folder."""

    path: PurePosixPath


@dataclass(frozen=True)
class UnpackPlacement:
    """The layer is a tar archive, unpacked into ``folder`` (``PurePosixPath('.')`` = the model folder)."""

    folder: PurePosixPath
    compression: Literal["none", "gzip", "zstd"]


@dataclass(frozen=True)
class ArtifactLayer:
    """One layer of a model artifact."""

    digest: str
    size: int
    media_type: str
    role: LayerRole
    #: where the layer goes in a model folder; ``None``: it has no place there (kept in the store)
    placement: FilePlacement | UnpackPlacement | None
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: (part number from 1, number of parts) for GGUF_SHARD layers
    shard: tuple[int, int] | None = None

    @property
    def path(self) -> PurePosixPath | None:
        """The file this layer becomes, for a raw layer."""
        return self.placement.path if isinstance(self.placement, FilePlacement) else None


@dataclass(frozen=True)
class ModelArtifact:
    """A model artifact: its format, config and layers in manifest order."""

    format: ArtifactFormat
    config_media_type: str
    config_digest: str
    config_size: int
    layers: tuple[ArtifactLayer, ...]
    artifact_type: str | None = None
    #: weights format from the config: "gguf", "safetensors", "dduf", … (None when not said)
    model_format: str | None = None
    #: the Kitfile of a ModelKit (config or manifest annotation), parsed
    kitfile: Mapping[str, Any] | None = None
    #: things a person may want to know (layers without a place, unknown layer types)
    notes: tuple[str, ...] = ()

    @property
    def total_size(self) -> int:
        """Bytes of the config and every layer."""
        return self.config_size + sum(layer.size for layer in self.layers)

    @property
    def primary_path(self) -> PurePosixPath | None:
        """The file a runtime opens first: the (first part of the) GGUF, else the first weights file."""
        for layer in self.layers:
            first_part = layer.role is LayerRole.GGUF_SHARD and layer.shard is not None and layer.shard[0] == 1
            if (layer.role is LayerRole.GGUF or first_part) and layer.path is not None:
                return layer.path
        for layer in self.layers:
            if layer.role is LayerRole.WEIGHTS and layer.path is not None:
                return layer.path
        return None


@dataclass(frozen=True)
class IndexEntry:
    """One manifest listed by an image index."""

    digest: str
    size: int
    media_type: str
    platform: str | None
    artifact_type: str | None
    annotations: Mapping[str, str]

    def describe(self) -> str:
        """One line for a person: platform or variant, type and digest."""
        what = self.platform or self.annotations.get("org.opencontainers.image.ref.name") or ""
        kind = self.artifact_type or self.media_type
        size = f", {self.size} bytes" if self.size else ""
        return f"{what or 'no platform'} ({kind}{size}) {self.digest}"


# -- public functions ------------------------------------------------------------


def describe_artifact(manifest: Mapping[str, Any], config: bytes) -> ModelArtifact:
    """Classify a model artifact and place its layers (see the module docstring).

    Raises :class:`IncompatibleModel` for an image index, a container image or
    an unknown config/artifact type (the message names the media type), and
    :class:`UnsafeSource` for a path that would leave the model folder or two
    layers claiming one path.
    """
    media_type = _text(manifest.get("mediaType"))
    if media_type in _INDEX_TYPES or "manifests" in manifest:
        entries = index_entries(_list_of_dicts(manifest.get("manifests")))
        raise IncompatibleModel(
            f"this reference is an image index ({media_type or 'no media type'}), not one model; "
            f"it lists {describe_index(entries)}. Pull one of them by digest."
        )
    config_descriptor = manifest.get("config")
    if not isinstance(config_descriptor, Mapping):
        raise IncompatibleModel("the manifest has no config descriptor; it is not a model artifact")
    config_type = _text(config_descriptor.get("mediaType"))
    artifact_type = _text(manifest.get("artifactType")) or None
    annotations = _annotations(manifest.get("annotations"))
    fmt = _format_of(config_type, artifact_type, annotations)
    config_json = _config_json(config, config_type)
    layers = _list_of_dicts(manifest.get("layers"))

    notes: list[str] = []
    kitfile: Mapping[str, Any] | None = None
    if fmt in (ArtifactFormat.DOCKER_V01, ArtifactFormat.DOCKER_V02):
        model_format = _nested_text(config_json, "config", "format")
        placed = _docker_layers(layers, fmt, notes)
    elif fmt is ArtifactFormat.KITOPS:
        kitfile = config_json
        model_format = _nested_text(config_json, "model", "format")
        placed = _kitops_layers(layers, config_json, notes)
    else:
        model_format = _nested_text(config_json, "config", "format")
        if fmt is ArtifactFormat.KITOPS_MODELPACK:
            kitfile = _kitfile_annotation(annotations[ANNOTATION_KITFILE])
        placed = _modelpack_layers(layers, model_format, notes)

    _check_no_collisions(placed)
    return ModelArtifact(
        format=fmt,
        config_media_type=config_type,
        config_digest=_text(config_descriptor.get("digest")),
        config_size=_size(config_descriptor.get("size")),
        layers=tuple(placed),
        artifact_type=artifact_type,
        model_format=(model_format or "").lower() or None,
        kitfile=kitfile,
        notes=tuple(notes),
    )


def index_entries(manifests: Sequence[Mapping[str, Any]]) -> list[IndexEntry]:
    """The entries of an image index (its ``manifests`` list), for an error or a dry run."""
    entries = []
    for raw in manifests:
        platform = raw.get("platform")
        where = None
        if isinstance(platform, Mapping):
            parts = [_text(platform.get(key)) for key in ("os", "architecture", "variant")]
            where = "/".join(p for p in parts if p) or None
        entries.append(
            IndexEntry(
                digest=_text(raw.get("digest")),
                size=_size(raw.get("size"), strict=False),
                media_type=_text(raw.get("mediaType")),
                platform=where,
                artifact_type=_text(raw.get("artifactType")) or None,
                annotations=_annotations(raw.get("annotations")),
            )
        )
    return entries


def describe_index(entries: Sequence[IndexEntry]) -> str:
    """The entries as a sentence: ``2 manifests: linux/amd64 (...) sha256:…; …``."""
    if not entries:
        return "no manifests"
    lines = "; ".join(entry.describe() for entry in entries[:20])
    more = f"; and {len(entries) - 20} more" if len(entries) > 20 else ""
    return f"{len(entries)} manifest{'s' if len(entries) != 1 else ''}: {lines}{more}"


# -- format ----------------------------------------------------------------------


def _format_of(config_type: str, artifact_type: str | None, annotations: Mapping[str, str]) -> ArtifactFormat:
    if config_type == DOCKER_CONFIG_V01:
        return ArtifactFormat.DOCKER_V01
    if config_type == DOCKER_CONFIG_V02:
        return ArtifactFormat.DOCKER_V02
    if config_type == KITOPS_CONFIG:
        return ArtifactFormat.KITOPS
    if config_type == MODELPACK_CONFIG:
        if ANNOTATION_KITFILE in annotations:
            return ArtifactFormat.KITOPS_MODELPACK
        return ArtifactFormat.MODELPACK
    if artifact_type in (MODELPACK_ARTIFACT, KITOPS_ARTIFACT):
        raise IncompatibleModel(
            f"the manifest says it is a model ({artifact_type}) but its config has the media type "
            f"{config_type or '(none)'!r}, which no model format uses"
        )
    if config_type in _IMAGE_CONFIGS:
        raise IncompatibleModel(
            f"this is a container image (config {config_type}), not a model artifact; "
            "Docker Model Runner, ModelPack and KitOps models are supported"
        )
    what = f"config media type {config_type!r}" if config_type else "no config media type"
    kind = f" and artifact type {artifact_type!r}" if artifact_type else ""
    raise IncompatibleModel(
        f"this artifact has {what}{kind}, which is not a model format modelpull knows "
        f"(Docker model v0.1/v0.2, CNCF ModelPack, KitOps ModelKit)"
    )


def _config_json(config: bytes, config_type: str) -> Mapping[str, Any]:
    try:
        data = json.loads(config)
    except ValueError:
        raise IncompatibleModel(f"the model's config ({config_type}) is not JSON") from None
    if not isinstance(data, dict):
        raise IncompatibleModel(f"the model's config ({config_type}) is not a JSON object")
    return data


def _kitfile_annotation(text: str) -> Mapping[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise IncompatibleModel(f"the ModelKit's {ANNOTATION_KITFILE} annotation is not JSON") from None
    if not isinstance(data, dict):
        raise IncompatibleModel(f"the ModelKit's {ANNOTATION_KITFILE} annotation is not a JSON object")
    return data


# -- Docker model artifacts ----------------------------------------------------------

_DOCKER_ROLES = {
    _DOCKER_GGUF: LayerRole.GGUF,
    _DOCKER_SAFETENSORS: LayerRole.WEIGHTS,
    _DOCKER_DDUF: LayerRole.WEIGHTS,
    _DOCKER_MMPROJ: LayerRole.MMPROJ,
    _DOCKER_LICENSE: LayerRole.LICENSE,
    _DOCKER_TEMPLATE: LayerRole.CHAT_TEMPLATE,
    _DOCKER_FILE: LayerRole.CONFIG,
    _DOCKER_DIR_TAR: LayerRole.FILES,
    _DOCKER_VLLM_TAR: LayerRole.CONFIG,
}


def _docker_layers(
    layers: Sequence[Mapping[str, Any]], fmt: ArtifactFormat, notes: list[str]
) -> list[ArtifactLayer]:
    legacy = fmt is ArtifactFormat.DOCKER_V01
    ggufs = [raw for raw in layers if _text(raw.get("mediaType")) == _DOCKER_GGUF]
    safetensors = [raw for raw in layers if _text(raw.get("mediaType")) == _DOCKER_SAFETENSORS]
    licenses = 0
    singles: dict[str, int] = {}
    placed = []
    for raw in layers:
        media_type = _text(raw.get("mediaType"))
        annotations = _annotations(raw.get("annotations"))
        role = _DOCKER_ROLES.get(media_type, LayerRole.OTHER)
        annotated = annotations.get(ANNOTATION_FILEPATH)
        shard = None
        placement: FilePlacement | UnpackPlacement | None
        if media_type in (_DOCKER_DIR_TAR, _DOCKER_VLLM_TAR):
            # Their archives carry the folder names themselves (Docker Model Runner
            # unpacks both into the model folder); a filepath on them names the tar.
            placement = UnpackPlacement(PurePosixPath("."), "none")
        elif annotated is not None:
            placement = FilePlacement(_safe_path(annotated, raw))
        elif legacy:
            name = _docker_v01_name(raw, media_type, ggufs, safetensors, licenses, singles)
            if media_type == _DOCKER_LICENSE:
                licenses += 1
            placement = FilePlacement(PurePosixPath(name)) if name else None
        else:
            placement = None
        if media_type == _DOCKER_GGUF:
            shard = _gguf_shard(placement, raw, ggufs, by_order=legacy)
            if shard is not None:
                role = LayerRole.GGUF_SHARD
        if role is LayerRole.OTHER:
            notes.append(f"layer {_text(raw.get('digest'))} has an unknown media type {media_type!r}")
        if placement is None:
            notes.append(
                f"layer {_text(raw.get('digest'))} ({media_type}) names no file path; it is kept "
                "in the store only"
            )
        placed.append(_layer(raw, role, placement, annotations, shard))
    return placed


def _docker_v01_name(
    raw: Mapping[str, Any],
    media_type: str,
    ggufs: list[Mapping[str, Any]],
    safetensors: list[Mapping[str, Any]],
    licenses: int,
    singles: dict[str, int],
) -> str | None:
    if media_type == _DOCKER_GGUF:
        return _numbered("model", "gguf", ggufs, raw)
    if media_type == _DOCKER_SAFETENSORS:
        return _numbered("model", "safetensors", safetensors, raw)
    if media_type == _DOCKER_LICENSE:
        return "LICENSE" if licenses == 0 else f"LICENSE-{licenses + 1}"
    single = {_DOCKER_MMPROJ: "model.mmproj", _DOCKER_TEMPLATE: "template.jinja", _DOCKER_DDUF: "model.dduf"}
    if media_type in single:
        singles[media_type] = singles.get(media_type, 0) + 1
        if singles[media_type] > 1:
            # Docker Model Runner refuses these too ("expected exactly 1").
            raise IncompatibleModel(f"the model has more than one {media_type} layer without a file path")
        return single[media_type]
    return None


def _numbered(stem: str, ext: str, group: list[Mapping[str, Any]], raw: Mapping[str, Any]) -> str:
    if len(group) == 1:
        return f"{stem}.{ext}"
    number = next(i for i, other in enumerate(group, 1) if other is raw)
    return f"{stem}-{number:05d}-of-{len(group):05d}.{ext}"


def _gguf_shard(
    placement: FilePlacement | UnpackPlacement | None,
    raw: Mapping[str, Any],
    ggufs: list[Mapping[str, Any]],
    by_order: bool,
) -> tuple[int, int] | None:
    if isinstance(placement, FilePlacement):
        match = _SHARD_NAME.search(placement.path.name)
        if match:
            return int(match.group(1)), int(match.group(2))
    if by_order and len(ggufs) > 1:
        # v0.1: every GGUF layer is one part of one model, in manifest order.
        return next(i for i, other in enumerate(ggufs, 1) if other is raw), len(ggufs)
    return None


# -- CNCF ModelPack ----------------------------------------------------------------------

_MODELPACK_KINDS = {
    "weight": LayerRole.WEIGHTS,
    "weight.config": LayerRole.CONFIG,
    "doc": LayerRole.DOC,
    "code": LayerRole.CODE,
    "dataset": LayerRole.DATASET,
}
_COMPRESSION: dict[str, Literal["none", "gzip", "zstd"]] = {
    "tar": "none",
    "tar+gzip": "gzip",
    "tar+zstd": "zstd",
}


def _modelpack_layers(
    layers: Sequence[Mapping[str, Any]], model_format: str | None, notes: list[str]
) -> list[ArtifactLayer]:
    placed = []
    for raw in layers:
        media_type = _text(raw.get("mediaType"))
        annotations = _annotations(raw.get("annotations"))
        match = _MODELPACK_LAYER.fullmatch(media_type)
        if match is not None:
            role, packing = _MODELPACK_KINDS[match.group(1)], match.group(2)
        elif media_type in _MODELPACK_DMR_WEIGHTS:
            role, packing = LayerRole.WEIGHTS, "raw"
        else:
            role, packing = LayerRole.OTHER, "raw"
            notes.append(f"layer {_text(raw.get('digest'))} has an unknown media type {media_type!r}")
        placed.append(_raw_or_tar(raw, role, packing, annotations, notes))
    return _mark_gguf_parts(placed)


def _raw_or_tar(
    raw: Mapping[str, Any],
    role: LayerRole,
    packing: str,
    annotations: Mapping[str, str],
    notes: list[str],
    tar_folder: PurePosixPath = _MODEL_ROOT,
) -> ArtifactLayer:
    if packing != "raw":
        return _layer(raw, role, UnpackPlacement(tar_folder, _COMPRESSION[packing]), annotations)
    annotated = annotations.get(ANNOTATION_FILEPATH)
    if annotated is None:
        notes.append(
            f"layer {_text(raw.get('digest'))} ({_text(raw.get('mediaType'))}) names no file "
            "path; it is kept in the store only"
        )
        return _layer(raw, role, None, annotations)
    path = _safe_path(annotated, raw)
    return _layer(raw, _refine_role(role, path), FilePlacement(path), annotations)


def _refine_role(role: LayerRole, path: PurePosixPath) -> LayerRole:
    """ModelPack says only weight/config/doc; the file name tells more (as Docker Model Runner reads it)."""
    name = path.name.lower()
    if role is LayerRole.WEIGHTS:
        if "mmproj" in name:
            return LayerRole.MMPROJ
        if name.endswith(".gguf"):
            return LayerRole.GGUF
    elif role is LayerRole.CONFIG and (name.endswith(".jinja") or "chat_template" in name):
        return LayerRole.CHAT_TEMPLATE
    elif role is LayerRole.DOC and any(word in name for word in ("license", "licence", "copying")):
        return LayerRole.LICENSE
    return role


def _mark_gguf_parts(layers: list[ArtifactLayer]) -> list[ArtifactLayer]:
    marked = []
    for layer in layers:
        shard = None
        if layer.role is LayerRole.GGUF and layer.path is not None:
            match = _SHARD_NAME.search(layer.path.name)
            if match:
                shard = (int(match.group(1)), int(match.group(2)))
        if shard is None:
            marked.append(layer)
        else:
            marked.append(
                ArtifactLayer(layer.digest, layer.size, layer.media_type, LayerRole.GGUF_SHARD,
                              layer.placement, layer.annotations, shard)
            )
    return marked


# -- KitOps ModelKits ----------------------------------------------------------------------

_KITOPS_KINDS = {
    "model": LayerRole.WEIGHTS,
    "modelpart": LayerRole.MODEL_PART,
    "dataset": LayerRole.DATASET,
    "code": LayerRole.CODE,
    "docs": LayerRole.DOC,
    "mcpb": LayerRole.MCP_BUNDLE,
}
# Which Kitfile list describes each kind's layers, in order.
_KITFILE_LISTS = {"modelpart": ("model", "parts"), "dataset": ("datasets",), "code": ("code",), "docs": ("docs",)}


def _kitops_layers(
    layers: Sequence[Mapping[str, Any]], kitfile: Mapping[str, Any], notes: list[str]
) -> list[ArtifactLayer]:
    counters: dict[str, int] = {}
    placed = []
    for raw in layers:
        media_type = _text(raw.get("mediaType"))
        annotations = _annotations(raw.get("annotations"))
        match = _KITOPS_LAYER.fullmatch(media_type)
        if match is None:
            notes.append(f"layer {_text(raw.get('digest'))} has an unknown media type {media_type!r}")
            placed.append(_raw_or_tar(raw, LayerRole.OTHER, "raw", annotations, notes))
            continue
        kind, form, compression = match.group(1), match.group(2), match.group(3)
        if form == "raw" and compression:
            raise IncompatibleModel(f"the ModelKit has a compressed raw layer ({media_type}), which KitOps never writes")
        packing = "raw" if form == "raw" else ("tar+" + compression if compression else "tar")
        entry = _kitfile_entry(kitfile, kind, counters)
        folder = _legacy_tar_folder(entry, raw) if packing != "raw" else PurePosixPath(".")
        placed.append(_raw_or_tar(raw, _KITOPS_KINDS[kind], packing, annotations, notes, folder))
    return _mark_gguf_parts(placed)


def _kitfile_entry(kitfile: Mapping[str, Any], kind: str, counters: dict[str, int]) -> Mapping[str, Any] | None:
    if kind == "model":
        model = kitfile.get("model")
        return model if isinstance(model, Mapping) else None
    keys = _KITFILE_LISTS.get(kind)
    if keys is None:
        return None
    found: Any = kitfile
    for key in keys:
        found = found.get(key) if isinstance(found, Mapping) else None
    index = counters.get(kind, 0)
    counters[kind] = index + 1
    if isinstance(found, list) and index < len(found) and isinstance(found[index], Mapping):
        entry: Mapping[str, Any] = found[index]
        return entry
    return None


def _legacy_tar_folder(entry: Mapping[str, Any] | None, raw: Mapping[str, Any]) -> PurePosixPath:
    """Where a ModelKit tar layer unpacks: the model folder, or (before KitOps 0.5) its entry's folder."""
    if entry is None:
        return PurePosixPath(".")
    digest = entry.get("digest")
    if isinstance(digest, str) and digest:
        if digest != raw.get("digest"):
            raise UnsafeSource(
                f"the ModelKit's Kitfile gives layer digest {digest[:80]} where the manifest has "
                f"{_text(raw.get('digest'))}; refusing it"
            )
        return PurePosixPath(".")
    path = entry.get("path")
    if not isinstance(path, str) or path in ("", "."):
        return PurePosixPath(".")
    return _safe_path(path, raw).parent


# -- shared helpers ----------------------------------------------------------------------------


def _check_no_collisions(layers: Sequence[ArtifactLayer]) -> None:
    files: dict[PurePosixPath, str] = {}
    for layer in layers:
        path = layer.path
        if path is None:
            continue
        if path in files and files[path] != layer.digest:
            raise UnsafeSource(
                f"two layers ({files[path]} and {layer.digest}) both land on {str(path)!r}; refusing them"
            )
        files[path] = layer.digest
    for path, digest in files.items():
        for parent in path.parents:
            if parent in files:
                raise UnsafeSource(
                    f"layer {digest} lands on {str(path)!r} below {str(parent)!r}, which another "
                    "layer makes a file; refusing them"
                )


def _safe_path(value: str, raw: Mapping[str, Any]) -> PurePosixPath:
    try:
        return safe_relative(value)
    except UnsafeSource:
        raise UnsafeSource(
            f"layer {_text(raw.get('digest'))} names the file path {value[:120]!r}, which would land "
            "outside the model folder; refusing it"
        ) from None


def _layer(
    raw: Mapping[str, Any],
    role: LayerRole,
    placement: FilePlacement | UnpackPlacement | None,
    annotations: Mapping[str, str],
    shard: tuple[int, int] | None = None,
) -> ArtifactLayer:
    return ArtifactLayer(
        digest=_text(raw.get("digest")),
        size=_size(raw.get("size")),
        media_type=_text(raw.get("mediaType")),
        role=role,
        placement=placement,
        annotations=annotations,
        shard=shard,
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _size(value: object, strict: bool = True) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if strict:
        raise UnsafeSource(f"the manifest gives an invalid size {str(value)[:40]!r}")
    return 0


def _nested_text(data: Mapping[str, Any], *keys: str) -> str | None:
    found: Any = data
    for key in keys:
        found = found.get(key) if isinstance(found, Mapping) else None
    return found if isinstance(found, str) and found else None


def _annotations(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _list_of_dicts(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    if not all(isinstance(item, Mapping) for item in value):
        raise UnsafeSource("the manifest has a malformed descriptor list")
    return list(value)
