"""Settings of the download service and the checks made before it starts."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from ..api import SOURCES, parse_rate, source_defaults
from ..errors import ModelpullError
from ._journal import DATA_DIR_ENV, Journal, JournalError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: largest JSON body accepted, in bytes
MAX_BODY = 64 * 1024
API_KEY_ENV = "MODELPULL_API_KEY"

#: options that name a folder on the service's machine
PATH_OPTIONS = SOURCES.path_options()


class ConfigError(ValueError):
    """The service cannot start with these settings."""


def _rate(value: float | str | None) -> float | None:
    try:
        return parse_rate(value)
    except ModelpullError as exc:
        raise ConfigError(exc.message) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServiceConfig:
    """What the service serves and who may use it.

    ``api_key``: when set, every API call needs ``Authorization: Bearer <key>``.
    The other keyword arguments are the sources' machine-wide settings
    (``hf_cache_dir``, ``hf_endpoint``, ``ollama_url``, ``ollama_models_dir``,
    ``lmstudio_dir``, ...: every :class:`~modelpull.providers.Location` a source
    declares): the defaults a request gets when it names no source or folder of
    its own. Clients may not choose folders unless ``allow_client_paths`` is set.

    ``data_dir``: where the service keeps its journal of jobs (``<data_dir>/jobs``),
    so that jobs outlive it; None keeps jobs in memory only. ``modelpull serve``
    always sets one (``--data-dir``, else ``MODELPULL_DATA_DIR``, else the
    user's data folder); :meth:`from_env` reads ``MODELPULL_DATA_DIR``.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        api_key: str | None = None,
        cors_origins: list[str] | None = None,
        allowed_hosts: list[str] | None = None,
        allow_client_paths: bool = False,
        keep_finished: float = 3600.0,
        max_running: int = 32,
        max_body: int = MAX_BODY,
        data_dir: str | os.PathLike[str] | None = None,
        max_speed: float | str | None = None,
        **settings: str | None,
    ) -> None:
        known = {location.name for location in SOURCES.locations()}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(f"unknown service setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        self.host = host
        self.port = port
        self.api_key = api_key
        self.cors_origins = list(cors_origins or [])
        self.allowed_hosts = list(allowed_hosts or [])
        self.allow_client_paths = allow_client_paths
        self.keep_finished = keep_finished
        self.max_running = max_running
        self.max_body = max_body
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        #: the bandwidth cap (bytes/s) shared by every job at start; changeable while it runs
        self.max_speed = _rate(max_speed)
        self.settings: dict[str, str] = {k: str(v) for k, v in settings.items() if v}

    def __getattr__(self, name: str) -> str | None:
        # the sources' settings read as attributes: config.hf_cache_dir
        if name != "settings" and name in {location.name for location in SOURCES.locations()}:
            return self.settings.get(name)
        raise AttributeError(name)

    def __repr__(self) -> str:
        return (f"ServiceConfig(host={self.host!r}, port={self.port!r}, "
                f"api_key={'***' if self.api_key else None}, settings={self.settings!r})")

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceConfig:
        """Settings from ``MODELPULL_API_KEY``, ``MODELPULL_DATA_DIR`` and the arguments."""
        config = cls(**overrides)
        if config.api_key is None:
            config.api_key = os.environ.get(API_KEY_ENV) or None
        if config.data_dir is None and os.environ.get(DATA_DIR_ENV):
            config.data_dir = Path(os.environ[DATA_DIR_ENV]).expanduser()
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
        if self.data_dir is not None:
            try:
                Journal(self.data_dir).check()
            except JournalError as exc:
                raise ConfigError(str(exc)) from None

    def trusted_hosts(self) -> list[str]:
        """Host headers to accept (against DNS rebinding when no key protects the API)."""
        if self.allowed_hosts:
            return list(self.allowed_hosts)
        if self.api_key and not is_loopback(self.host):
            return ["*"]
        hosts = {"127.0.0.1", "localhost", "::1", "[::1]", self.host}
        return sorted(hosts)

    def provider_defaults(
        self, provider: str, options: dict[str, Any] | None = None
    ) -> tuple[str | None, dict[str, Any]]:
        """(base_url, options) a request for ``provider`` (with these options) gets unless it names its own."""
        return source_defaults(provider, self.settings, options)

    def inventory_options(self) -> dict[str, Any]:
        """The settings the inventory reads, under its own names."""
        return {
            location.key: self.settings[location.name]
            for location in SOURCES.locations()
            if not location.serve_only and location.name in self.settings
        }
