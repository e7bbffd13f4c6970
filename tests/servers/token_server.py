"""A loopback token server like ``auth.docker.io/token``, and docker-registry behind it.

* :class:`TokenServer` answers ``GET /token?service=…&scope=…`` the way Docker
  Hub's token service does: optional ``Basic`` credentials (required when
  ``credentials`` is set), JSON with ``token`` and ``access_token`` (the same
  JWT), ``expires_in`` and ``issued_at``. Tokens are real JWTs (RS256, the
  signing certificate in the ``x5c`` header) that grant the scopes asked for.
  Every request is recorded in :attr:`TokenServer.requests`.
* :class:`TokenAuthRegistry` is :class:`~tests.servers.registry.DockerRegistry`
  (Debian's docker-registry 2.8) run with ``auth: token:`` pointing at that
  realm, serving the storage of another registry: tests push to the open
  registry as usual and pull through this one, which demands Bearer tokens and
  checks their signature, issuer, audience, expiry and scope.

docker-registry 2.8 verifies a token through ``rootcertbundle``: a JWT whose
``x5c`` chain ends in a certificate of that bundle is trusted. A self-signed
certificate that is both the bundle and the chain is enough. The settings reach
docker-registry as ``REGISTRY_AUTH_TOKEN_*`` environment variables, which
override its configuration file.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from . import BackgroundAiohttpServer
from .registry import DockerRegistry

ISSUER = "modelpull-test-issuer"
SERVICE = "registry.docker.io"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer(BackgroundAiohttpServer):
    """``GET /token`` as Docker Hub's auth service answers it, on 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        *,
        service: str = SERVICE,
        credentials: dict[str, str] | None = None,
        lifetime: int = 300,
    ) -> None:
        super().__init__()
        self.service = service
        #: user -> password; None: anyone may have a token, with or without credentials
        self.credentials = credentials
        self.lifetime = lifetime
        self.requests: list[dict[str, Any]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cert = self._self_signed_certificate()
        self.cert_bundle = Path(workdir) / "token-root.pem"
        self.cert_bundle.parent.mkdir(parents=True, exist_ok=True)
        self.cert_bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}/token"

    def _self_signed_certificate(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelpull test token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self._token)
        return app

    def make_token(self, scopes: list[str], subject: str = "") -> str:
        """A JWT docker-registry accepts, granting ``scopes`` (``repository:<name>:<actions>``)."""
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name:
                access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(12),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    async def _token(self, request: web.Request) -> web.StreamResponse:
        user = self._basic_user(request.headers.get("Authorization", ""))
        self.requests.append(
            {
                "service": request.query.get("service"),
                "scopes": request.query.getall("scope", []),
                "user": user,
                "authorization": "Authorization" in request.headers,
            }
        )
        if self.credentials is not None and user is None:
            return web.json_response(
                {"details": "incorrect username or password"}, status=401,
                headers={"WWW-Authenticate": 'Basic realm="token"'},
            )
        if request.query.get("service") != self.service:
            return web.json_response({"details": "unknown service"}, status=400)
        token = self.make_token(request.query.getall("scope", []), user or "")
        return web.json_response(
            {
                "token": token,
                "access_token": token,
                "expires_in": self.lifetime,
                "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            }
        )

    def _basic_user(self, header: str) -> str | None:
        """The user of valid Basic credentials (any when none are configured), else None."""
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if self.credentials is None or self.credentials.get(user) == password:
            return user
        return None


class TokenAuthRegistry(DockerRegistry):
    """docker-registry demanding Bearer tokens from ``tokens``' realm, serving ``storage_of``'s blobs."""

    def __init__(self, workdir: Path, tokens: TokenServer, storage_of: DockerRegistry) -> None:
        super().__init__(workdir)
        self.tokens = tokens
        self.storage = storage_of.workdir / "data"

    def start(self) -> TokenAuthRegistry:
        overrides = {
            "REGISTRY_AUTH_TOKEN_REALM": self.tokens.realm,
            "REGISTRY_AUTH_TOKEN_SERVICE": self.tokens.service,
            "REGISTRY_AUTH_TOKEN_ISSUER": ISSUER,
            "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE": str(self.tokens.cert_bundle),
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(self.storage),
        }
        saved = {key: os.environ.get(key) for key in overrides}
        os.environ.update(overrides)
        try:
            super().start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return self

    def _wait_ready(self, timeout: float = 15.0) -> bool:
        # /v2/ answers 401 here: that answer means the server is up.
        deadline = time.monotonic() + timeout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                opener.open(f"{self.url}/v2/", timeout=5)
                return True
            except urllib.error.HTTPError as exc:
                return exc.code == 401
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        return False
