"""OCI references as Docker Model Runner reads them: ``[registry/][namespace/]name[:tag|@sha256:…]``.

The grammar is Docker's (``distribution/reference``), the defaults Docker
Model Runner's (docs PROTOCOLS.md §8):

* no registry: Docker Hub (``docker.io``, served by ``registry-1.docker.io``,
  tokens from ``auth.docker.io``), or ``$DEFAULT_REGISTRY`` when set, as Docker
  Model Runner reads it; ``index.docker.io`` is Docker Hub too;
* a first component with a ``.`` or a ``:``, or ``localhost``, is a registry;
* a bare name on Docker Hub gets the ``ai/`` namespace (Docker's own
  ``library/`` is Docker Model Runner's ``ai/``);
* no tag: ``latest`` (an empty tag too); ``name:tag@sha256:…`` pulls the digest
  and keeps the tag; ``name@sha256:…`` pulls the digest and has no tag;
* the name (not the tag) is lowercased, as Docker Model Runner does before it
  resolves a name; ``hf.co/`` is written ``huggingface.co/``.

Anything else is :class:`~modelpull.errors.InvalidModel`, before any network call.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import InvalidModel

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_AUTH",
    "DOCKER_HUB_NAMESPACE",
    "DOCKER_HUB_REGISTRY",
    "OciReference",
    "default_registry",
    "parse_reference",
]

#: the name Docker gives Docker Hub in references and stored tags
DOCKER_HUB = "docker.io"
#: the host that serves Docker Hub's distribution API
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
#: Docker Hub's token service (the realm ``registry-1.docker.io`` names)
DOCKER_HUB_AUTH = "auth.docker.io"
#: Docker Model Runner's namespace for bare names (``smollm2`` is ``ai/smollm2``)
DOCKER_HUB_NAMESPACE = "ai"
_LEGACY_HUB = "index.docker.io"

# Docker's reference grammar (distribution/reference), the parts Docker Model Runner relies on.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?")
_PATH_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_TEXT = 512
_MAX_NAME = 255


@dataclass(frozen=True)
class OciReference:
    """One model in one registry: where it is and which manifest."""

    #: the registry as tags name it: ``docker.io``, ``registry.example:5000``
    domain: str
    #: ``ai/smollm2``, ``team/models/tiny``
    repository: str
    #: ``latest``, ``Q4_K_M``; None for a reference by digest alone
    tag: str | None
    #: ``sha256:…`` when the reference pins one
    digest: str | None
    #: the model is on the default registry (named or not): a ``base_url`` mirror serves it
    default_domain: bool

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def registry_host(self) -> str:
        """The host serving the distribution API (Docker Hub's is ``registry-1.docker.io``)."""
        return DOCKER_HUB_REGISTRY if self.domain == DOCKER_HUB else self.domain

    @property
    def stored_tag(self) -> str | None:
        """The tag Docker Model Runner stores: ``docker.io/ai/smollm2:latest`` (None for a digest alone)."""
        return f"{self.domain}/{self.repository}:{self.tag}" if self.tag is not None else None

    @property
    def name(self) -> str:
        """The repository as people write it: ``ai/smollm2``, ``registry.example:5000/team/m``."""
        return f"{self.domain}/{self.repository}".removeprefix(DOCKER_HUB + "/")

    @property
    def short(self) -> str:
        """The reference as ``docker model ls`` shows it: ``ai/smollm2:latest``, ``…@sha256:…``."""
        name = self.name
        if self.tag is not None:
            name += f":{self.tag}"
        if self.digest is not None:
            name += f"@{self.digest}"
        return name

    def __str__(self) -> str:
        return self.short


def default_registry() -> str:
    """``$DEFAULT_REGISTRY`` (as Docker Model Runner reads it), else ``docker.io``."""
    value = (os.environ.get("DEFAULT_REGISTRY") or "").strip().lower()
    return DOCKER_HUB if not value or value == _LEGACY_HUB else value


def parse_reference(reference: object, registry: str | None = None) -> OciReference:
    """Parse ``[registry/][namespace/]name[:tag|@sha256:…]`` (see the module docstring).

    ``registry`` replaces the default registry (else :func:`default_registry`).
    Raises :class:`InvalidModel` for anything Docker would refuse.
    """
    if not isinstance(reference, str):
        raise InvalidModel("the model reference must be a string such as ai/smollm2:latest")
    text = reference.strip()
    shown = text[:80]
    if not text or len(text) > _MAX_TEXT:
        raise InvalidModel(f"{shown!r} is not a model reference; expected [registry/][namespace/]name[:tag]")
    if text.startswith("hf.co/"):
        text = "huggingface.co/" + text[len("hf.co/"):]
    name, at, digest = text.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise InvalidModel(f"{shown!r} has an invalid digest (expected sha256:<64 lowercase hex>)")
    tag: str | None = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:] or None
    name = name.lower()  # the name only: a tag keeps its case
    if tag is None and not at:
        tag = "latest"
    if tag is not None and not _TAG.fullmatch(tag):
        raise InvalidModel(f"{shown!r} has an invalid tag {tag[:40]!r}")

    first, _, rest = name.partition("/")
    explicit = bool(rest) and ("." in first or ":" in first or first == "localhost")
    fallback = (registry or default_registry()).lower()
    domain, path = (first, rest) if explicit else (fallback, name)
    if domain == _LEGACY_HUB:
        domain = DOCKER_HUB
    if "/" not in path and (not explicit or domain == DOCKER_HUB):
        # Docker names it library/<name>; Docker Model Runner's default namespace replaces it.
        path = f"{DOCKER_HUB_NAMESPACE}/{path}"
    if not _DOMAIN.fullmatch(domain) or not all(_PATH_PART.fullmatch(p) for p in path.split("/")):
        raise InvalidModel(
            f"{shown!r} is not a valid model reference; expected [registry/][namespace/]name[:tag] "
            "with lowercase letters, digits and . _ - in the name"
        )
    if len(domain) + 1 + len(path) > _MAX_NAME:
        raise InvalidModel(f"{shown!r} is longer than a registry allows")
    return OciReference(
        domain=domain,
        repository=path,
        tag=tag,
        digest=digest if at else None,
        default_domain=domain == (DOCKER_HUB if fallback == _LEGACY_HUB else fallback),
    )
