"""Model sources. Names are part of the public API."""

from __future__ import annotations

from .base import Provider
from .gguf import GgufProvider, LmStudioProvider
from .huggingface import HuggingFaceProvider, MlxProvider
from .ollama_registry import OllamaRegistryProvider
from .ollama_server import OllamaServerProvider

PROVIDERS: dict[str, type[Provider]] = {
    "huggingface": HuggingFaceProvider,
    "mlx": MlxProvider,
    "ollama": OllamaServerProvider,
    "ollama-registry": OllamaRegistryProvider,
    "gguf": GgufProvider,
    "lmstudio": LmStudioProvider,
}
ALIASES: dict[str, str] = {"hf": "huggingface"}


def register(cls: type[Provider], *aliases: str) -> None:
    PROVIDERS[cls.name] = cls
    for alias in aliases:
        ALIASES[alias] = cls.name


def provider_names() -> list[str]:
    return sorted(PROVIDERS)


__all__ = ["ALIASES", "PROVIDERS", "Provider", "provider_names", "register"]
