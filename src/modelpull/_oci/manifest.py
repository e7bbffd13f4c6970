"""OCI and Docker manifests: media types, and parsing that refuses what we must not act on.

A manifest names blobs by digest and size; those become file names and
download sizes, so every descriptor is checked before anything uses it:
digests are ``sha256:<64 lowercase hex>``, sizes are integers within
:data:`MAX_BLOB_SIZE`, annotations map strings to strings. Anything else is
:class:`~modelpull.errors.UnsafeSource`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnsafeSource

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
#: every Ollama layer's media type starts so (``…model``, ``…template``, ``…params``…)
OLLAMA_LAYER_PREFIX = "application/vnd.ollama.image."

#: image manifests, in the order a client prefers them
MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
#: lists of manifests (one per platform)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)

#: the largest blob, and the largest sum of blobs, a manifest may name (no model comes near)
MAX_BLOB_SIZE = 2 << 40
#: the largest manifest we read (real ones are a few KB)
MAX_MANIFEST_SIZE = 4 << 20
_MAX_MEDIA_TYPE = 200
_MAX_ANNOTATIONS = 1000
_MAX_ANNOTATION = 64 << 10
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def digest_hex(digest: object) -> str:
    """The hex of a ``sha256:<64 hex>`` digest; anything else is refused."""
    match = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise UnsafeSource(f"the registry gave an invalid digest {str(digest)[:80]!r}; refusing it")
    return match.group(1)


@dataclass(frozen=True)
class Descriptor:
    """One blob or manifest a manifest or index points to, every field checked."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    #: the platform of an index entry (``architecture``, ``os``…), None elsewhere
    platform: dict[str, Any] | None = None
    artifact_type: str | None = None


@dataclass(frozen=True)
class Manifest:
    """An image manifest: a config blob and layers, and the exact bytes it came as."""

    media_type: str
    artifact_type: str | None
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str]
    raw: bytes

    @property
    def blobs(self) -> list[Descriptor]:
        """The config first, then every layer, in manifest order."""
        return [self.config, *self.layers]

    @property
    def total_size(self) -> int:
        return sum(blob.size for blob in self.blobs)


def media_type_of(content_type: str | None) -> str:
    """``application/x; charset=…`` → ``application/x``."""
    return (content_type or "").split(";")[0].strip().lower()


def is_index(content_type: str | None, body: bytes | None = None) -> bool:
    """Is this answer a list of manifests (Docker manifest list, OCI index)?

    Judged by the ``Content-Type`` and, when ``body`` is given, by its own
    ``mediaType`` or, lacking one, by a ``manifests`` list where layers would be.
    """
    if media_type_of(content_type) in INDEX_TYPES:
        return True
    if body is None:
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and _lists_manifests(data)


def _lists_manifests(data: dict[str, Any]) -> bool:
    kind = data.get("mediaType")
    if isinstance(kind, str) and kind:
        return kind in INDEX_TYPES
    return isinstance(data.get("manifests"), list) and "layers" not in data


def parse_manifest(body: bytes, content_type: str | None = None) -> Manifest:
    """An image manifest's config and layers, each descriptor checked.

    Raises :class:`UnsafeSource` for a manifest we must not act on: not JSON,
    not schema 2, an index, a bad digest, an absurd size, malformed
    annotations.
    """
    data = _load(body, "manifest")
    if media_type_of(content_type) in INDEX_TYPES or _lists_manifests(data):
        raise UnsafeSource("the registry sent an image index where an image manifest was expected")
    config, layers = data.get("config"), data.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise UnsafeSource("the registry sent a manifest without config and layers")
    manifest = Manifest(
        media_type=_optional_str(data.get("mediaType"), "media type") or media_type_of(content_type),
        artifact_type=_optional_str(data.get("artifactType"), "artifact type"),
        config=_descriptor(config),
        layers=[_descriptor(layer) for layer in layers],
        annotations=_annotations(data.get("annotations"), "the manifest"),
        raw=body,
    )
    if manifest.total_size > MAX_BLOB_SIZE:
        raise UnsafeSource("the registry sent a manifest whose layers add up to an absurd size")
    return manifest


def parse_index(body: bytes) -> list[Descriptor]:
    """The manifests an index (or Docker manifest list) points to, each checked."""
    data = _load(body, "index")
    entries = data.get("manifests")
    if not isinstance(entries, list):
        raise UnsafeSource("the registry sent an index without a list of manifests")
    return [_descriptor(entry, in_index=True) for entry in entries]


def _load(body: bytes, what: str) -> dict[str, Any]:
    if len(body) > MAX_MANIFEST_SIZE:
        raise UnsafeSource(f"the registry sent a {len(body)}-byte {what}; refusing it")
    try:
        data = json.loads(body)
    except ValueError:
        raise UnsafeSource(f"the registry sent a {what} that is not JSON") from None
    if not isinstance(data, dict) or data.get("schemaVersion") != 2:
        raise UnsafeSource(f"the registry sent something that is not a schema 2 image {what}")
    return data


def _descriptor(raw: object, in_index: bool = False) -> Descriptor:
    if not isinstance(raw, dict):
        raise UnsafeSource("the registry sent a manifest with a malformed layer")
    digest, size = raw.get("digest"), raw.get("size")
    digest_hex(digest)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_SIZE:
        raise UnsafeSource(f"the registry gave an invalid size {str(size)[:40]!r} for {digest}")
    media_type = raw.get("mediaType", "")
    if not isinstance(media_type, str) or len(media_type) > _MAX_MEDIA_TYPE:
        raise UnsafeSource(f"the registry gave an invalid media type for {digest}")
    platform = raw.get("platform") if in_index else None
    if platform is not None and not isinstance(platform, dict):
        raise UnsafeSource(f"the registry gave an invalid platform for {digest}")
    return Descriptor(
        media_type=media_type,
        digest=str(digest),
        size=size,
        annotations=_annotations(raw.get("annotations"), str(digest)),
        platform=platform,
        artifact_type=_optional_str(raw.get("artifactType"), f"artifact type for {digest}"),
    )


def _annotations(raw: object, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if (
        not isinstance(raw, dict)
        or len(raw) > _MAX_ANNOTATIONS
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items())
        or any(len(k) + len(v) > _MAX_ANNOTATION for k, v in raw.items())
    ):
        raise UnsafeSource(f"the registry gave invalid annotations for {where}; refusing them")
    return dict(raw)


def _optional_str(raw: object, what: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > _MAX_MEDIA_TYPE:
        raise UnsafeSource(f"the registry gave an invalid {what}")
    return raw
