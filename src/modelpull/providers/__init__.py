"""The sources modelpull downloads from: this registry is the only list of them.

Each source declares itself in its own module (a
:class:`~modelpull.providers._source.Source`); adding one is its module, its
tests and one line below. Everything else - the API, the CLI, the service, the
inventory and the page - reads the declarations from here.
"""

from __future__ import annotations

from . import gguf, huggingface, modelscope, ollama_registry, ollama_server, url
from ._registry import Registry
from ._source import Landing, LocalModel, Location, Option, PartialDownload, Place, Source
from .base import Provider
from .oci import OCI

SOURCES = Registry((
    *huggingface.SOURCES,
    *gguf.SOURCES,
    ollama_server.OLLAMA_SERVER,
    ollama_registry.OLLAMA_REGISTRY,
    OCI,
    modelscope.MODELSCOPE,
    url.URL_SOURCE,
))


def provider_names() -> list[str]:
    """Every source's name (aliases left out), sorted."""
    return SOURCES.names()


__all__ = ["SOURCES", "Landing", "LocalModel", "Location", "Option", "PartialDownload", "Place", "Provider", "Registry",
           "Source", "provider_names"]
