"""Registry auth: answer ``WWW-Authenticate`` challenges, keep the token to the registry.

An OCI registry that wants credentials answers ``401`` with
``WWW-Authenticate: Bearer realm="…",service="…",scope="…"``. We fetch a token
from the realm (sending the caller's credential there, if any), cache it until
it expires, and send it as ``Authorization: Bearer …`` to the registry's own
origin only: a redirect to a CDN or any other host gets no credentials. A
realm on another host than the registry is refused, so a hostile registry
cannot collect the caller's credential through its challenge; the one
exception is a host the caller names as the registry's own token service
(``realm_hosts``: Docker Hub's ``registry-1.docker.io`` sends its clients to
``auth.docker.io``).

``Basic`` challenges are answered only with a ``user:password`` credential.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from yarl import URL

from .._lazy import lazy
from .._secrets import Secret
from .._transfer import read_capped, same_origin
from ..errors import AuthRequired, ConnectionFailed, UnsafeSource

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")


_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
#: tokens without ``expires_in`` are good for 60 s (the distribution spec's default)
_DEFAULT_LIFETIME = 60.0
_MAX_TOKEN_RESPONSE = 1 << 20


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",scope="y"`` → ``("bearer", {"realm": "x", "scope": "y"})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        key.lower(): (quoted.replace('\\"', '"') if quoted is not None else bare)
        for key, quoted, bare in _PARAM.findall(rest)
    }
    return scheme.lower(), params


class RegistryAuth:
    """Credentials for one registry origin, refreshed from its token realm on a 401."""

    def __init__(
        self, registry: str | URL, credential: Secret | None = None, realm_hosts: Collection[str] = ()
    ) -> None:
        self.registry = URL(str(registry))
        self._credential = credential
        #: hosts besides the registry's own that may serve its token realm
        self.realm_hosts = frozenset(host.lower() for host in realm_hosts)
        self._header: Secret | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    # -- the engine's Auth protocol ----------------------------------------
    def headers_for(self, url: URL) -> dict[str, str]:
        if self._header is None or not same_origin(url, self.registry):
            return {}
        if self._expires and time.monotonic() > self._expires:
            return {}  # expired: the 401 that follows fetches a new one
        return {"Authorization": self._header.reveal()}

    async def refresh(self, session: aiohttp.ClientSession, response: aiohttp.ClientResponse) -> bool:
        if not same_origin(response.url, self.registry):
            return False
        sent = response.request_info.headers.get("Authorization")
        async with self._lock:
            current = self._header.reveal() if self._header else None
            if current is not None and sent != current and not self._expired():
                return True  # another request refreshed while this one waited
            challenge = response.headers.get("WWW-Authenticate", "")
            scheme, params = parse_challenge(challenge)
            if scheme == "bearer" and params.get("realm"):
                token, lifetime = await self._fetch_token(session, params)
                self._header = Secret(f"Bearer {token}")
                # Refresh a little early so a long download never sends a stale token.
                self._expires = time.monotonic() + max(1.0, lifetime * 0.9)
                return True
            if scheme == "basic" and self._credential and ":" in self._credential.reveal():
                if self._header is not None and sent == self._header.reveal():
                    return False  # these credentials were just refused
                self._header = Secret(f"Basic {_basic(self._credential)}")
                self._expires = 0.0
                return True
            return False

    def _expired(self) -> bool:
        return bool(self._expires) and time.monotonic() > self._expires

    # -- the token realm ---------------------------------------------------
    def check_realm(self, realm: str) -> URL:
        """The realm URL if we may send credentials there; else :class:`UnsafeSource`."""
        url = URL(realm)
        if url.scheme not in ("http", "https") or not url.host:
            raise UnsafeSource(f"the registry at {self._origin()} named an invalid token realm")
        host = (url.host or "").lower()
        if host != (self.registry.host or "").lower() and host not in self.realm_hosts:
            raise UnsafeSource(
                f"the registry at {self._origin()} sent its token realm to another host "
                f"({url.host}); refusing to send credentials there"
            )
        if (self.registry.scheme == "https" or host in self.realm_hosts) and url.scheme != "https":
            raise UnsafeSource(
                f"the registry at {self._origin()} asked for a token over plain http; refusing"
            )
        return url

    async def _fetch_token(self, session: aiohttp.ClientSession, params: dict[str, str]) -> tuple[str, float]:
        realm = self.check_realm(params["realm"])
        query: list[tuple[str, str]] = list(realm.query.items())
        if params.get("service"):
            query.append(("service", params["service"]))
        for scope in (params.get("scope") or "").split():
            query.append(("scope", scope))
        headers: dict[str, str] = {"Accept": "application/json"}
        if self._credential:
            value = self._credential.reveal()
            headers["Authorization"] = f"Basic {_basic(self._credential)}" if ":" in value else f"Bearer {value}"
        where = str(realm.with_query(None))
        try:
            async with session.get(
                realm.with_query(query), headers=headers, allow_redirects=False
            ) as response:
                if response.status in (401, 403):
                    hint = "the credential you gave was refused" if self._credential else (
                        "pass a token (token=... or --token)"
                    )
                    raise AuthRequired(f"the token service {where} refused access: {hint}")
                if response.status != 200:
                    raise AuthRequired(
                        f"the token service {where} answered HTTP {response.status}; cannot "
                        "authenticate to the registry"
                    )
                raw = await read_capped(response, _MAX_TOKEN_RESPONSE)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ConnectionFailed(f"cannot reach the token service {where}: {type(exc).__name__}") from None
        try:
            data: Any = json.loads(raw) if len(raw) <= _MAX_TOKEN_RESPONSE else None
        except ValueError:
            data = None
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise AuthRequired(f"the token service {where} gave no usable token")
        lifetime = data.get("expires_in")
        if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = _DEFAULT_LIFETIME
        return token, float(lifetime)

    def _origin(self) -> str:
        return str(self.registry.origin())

    def __repr__(self) -> str:
        return f"RegistryAuth(registry={self._origin()!r}, token={'***' if self._header else None})"


def _basic(credential: Secret) -> str:
    return base64.b64encode(credential.reveal().encode()).decode()
