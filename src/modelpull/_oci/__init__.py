"""OCI distribution registries: references, manifests, token realms, blob URLs.

Beside the transfer engine: the engine moves blobs, this package finds them.
It is the one way in: callers import from ``modelpull._oci``, never from its
modules.

* ``auth``: :class:`RegistryAuth`, answering ``WWW-Authenticate`` challenges.
* ``manifest``: media types, :class:`Manifest` and :class:`Descriptor`, and
  parsing that refuses what must not be acted on.
* ``client``: :class:`OciClient` for one registry (manifest fetch with
  content negotiation, retries, error mapping; blob URLs; small blobs).
* ``reference``: :func:`parse_reference` for ``[registry/][namespace/]name[:tag|@digest]``
  with Docker Hub's and Docker Model Runner's defaults.
* ``artifacts``: what a model artifact holds and where each layer lands
  (imported from ``modelpull._oci.artifacts``).
"""

from .auth import RegistryAuth, parse_challenge
from .client import (
    FetchedManifest,
    OciClient,
    check_reference,
    check_repository,
    error_codes,
    registry_url,
)
from .manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_BLOB_SIZE,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    OCI_MANIFEST,
    OLLAMA_LAYER_PREFIX,
    Descriptor,
    Manifest,
    digest_hex,
    is_index,
    media_type_of,
    parse_index,
    parse_manifest,
)
from .reference import (
    DOCKER_HUB,
    DOCKER_HUB_AUTH,
    DOCKER_HUB_NAMESPACE,
    DOCKER_HUB_REGISTRY,
    OciReference,
    default_registry,
    parse_reference,
)

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_AUTH",
    "DOCKER_HUB_NAMESPACE",
    "DOCKER_HUB_REGISTRY",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "MAX_BLOB_SIZE",
    "MAX_MANIFEST_SIZE",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "OLLAMA_LAYER_PREFIX",
    "Descriptor",
    "FetchedManifest",
    "Manifest",
    "OciClient",
    "OciReference",
    "RegistryAuth",
    "check_reference",
    "check_repository",
    "default_registry",
    "digest_hex",
    "error_codes",
    "is_index",
    "media_type_of",
    "parse_challenge",
    "parse_index",
    "parse_manifest",
    "parse_reference",
    "registry_url",
]
