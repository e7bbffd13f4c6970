"""Settings of the download service and the checks made before it starts."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from ..providers import ALIASES, PROVIDERS
from ..providers.huggingface import HuggingFaceProvider
from ..providers.ollama_server import OllamaServerProvider

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: largest JSON body accepted, in bytes
MAX_BODY = 64 * 1024
API_KEY_ENV = "MODELPULL_API_KEY"

#: options that name a folder on the service's machine
PATH_OPTIONS = frozenset({"cache_dir", "local_dir", "models_dir", "lmstudio_dir", "dest", "dest_dir"})


class ConfigError(ValueError):
    """The service cannot start with these settings."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServiceConfig:
    """What the service serves and who may use it.

    ``api_key``: when set, every API call needs ``Authorization: Bearer <key>``.
    ``hf_cache_dir`` / ``hf_endpoint`` / ``ollama_url`` / ``ollama_models_dir``
    are the defaults a request gets when it names no source or folder of its own.
    Clients may not choose folders unless ``allow_client_paths`` is set.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)
    hf_cache_dir: str | None = None
    hf_endpoint: str | None = None
    ollama_url: str | None = None
    ollama_models_dir: str | None = None
    lmstudio_dir: str | None = None
    allow_client_paths: bool = False
    keep_finished: float = 3600.0
    max_running: int = 32
    max_body: int = MAX_BODY

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceConfig:
        """Settings from ``MODELPULL_API_KEY`` and the arguments."""
        config = cls(**overrides)
        if config.api_key is None:
            config.api_key = os.environ.get(API_KEY_ENV) or None
        return config

    def check(self) -> None:
        """Refuse settings that would expose the service without a key."""
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError("the API key must have at least 8 characters")
        if not is_loopback(self.host) and not self.api_key:
            raise ConfigError(
                f"refusing to listen on {self.host}: anyone who can reach it could download to "
                f"and delete from this machine. Set an API key (--api-key or {API_KEY_ENV}) or "
                "bind to 127.0.0.1"
            )
        if "*" in self.cors_origins and not self.api_key:
            raise ConfigError("--cors-origin '*' needs an API key")

    def trusted_hosts(self) -> list[str]:
        """Host headers to accept (against DNS rebinding when no key protects the API)."""
        if self.allowed_hosts:
            return list(self.allowed_hosts)
        if self.api_key and not is_loopback(self.host):
            return ["*"]
        hosts = {"127.0.0.1", "localhost", "::1", "[::1]", self.host}
        return sorted(hosts)

    def provider_defaults(self, provider: str) -> tuple[str | None, dict[str, Any]]:
        """(base_url, options) a request for ``provider`` gets unless it names its own."""
        name = ALIASES.get(provider, provider)
        cls = PROVIDERS.get(name)
        options: dict[str, Any] = {}
        base_url: str | None = None
        if cls is None:
            return None, options
        if issubclass(cls, HuggingFaceProvider):
            base_url = self.hf_endpoint
            if self.hf_cache_dir and "cache_dir" in cls.options:
                options["cache_dir"] = self.hf_cache_dir
        elif issubclass(cls, OllamaServerProvider):
            base_url = self.ollama_url
        # models_dir means LM Studio's folder to lmstudio, Ollama's store to the others.
        folder = self.lmstudio_dir if name == "lmstudio" else self.ollama_models_dir
        if folder and "models_dir" in cls.options:
            options["models_dir"] = folder
        return base_url, options

    def inventory_options(self) -> dict[str, Any]:
        return {
            "cache_dir": self.hf_cache_dir,
            "ollama_url": self.ollama_url,
            "ollama_models_dir": self.ollama_models_dir,
            "lmstudio_dir": self.lmstudio_dir,
        }
