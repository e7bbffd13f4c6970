"""Credentials for the engine's requests, bound to the host they belong to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from yarl import URL

from .._lazy import lazy
from .._secrets import Secret

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")


class Auth(Protocol):
    def headers_for(self, url: URL) -> dict[str, str]:
        """Headers to send to ``url``; credentials only go to their own host."""
        ...

    async def refresh(self, session: aiohttp.ClientSession, response: aiohttp.ClientResponse) -> bool:
        """Called on a 401; True when a retry with new credentials makes sense."""
        ...


class NoAuth:
    def headers_for(self, url: URL) -> dict[str, str]:
        return {}

    async def refresh(self, session: aiohttp.ClientSession, response: aiohttp.ClientResponse) -> bool:
        return False


def same_origin(a: URL, b: URL) -> bool:
    return (a.scheme, a.host, a.explicit_port or a.port) == (b.scheme, b.host, b.explicit_port or b.port)


class BearerAuth:
    """A static bearer token, sent only to the origin it was given for."""

    def __init__(self, token: Secret | None, origin: str | URL) -> None:
        self._token = token
        self._origin = URL(str(origin))

    def headers_for(self, url: URL) -> dict[str, str]:
        if self._token and same_origin(url, self._origin):
            return {"Authorization": f"Bearer {self._token.reveal()}"}
        return {}

    async def refresh(self, session: aiohttp.ClientSession, response: aiohttp.ClientResponse) -> bool:
        return False

    def __repr__(self) -> str:
        return f"BearerAuth(origin={str(self._origin)!r}, token={'***' if self._token else None})"
