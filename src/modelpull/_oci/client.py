"""One OCI distribution registry: where it is, its manifests, its blob URLs, its errors.

:class:`OciClient` speaks the pull side of the distribution API for one
registry origin. Requests go through the transfer package's one request loop
(redirects by hand, one ``401`` answered by :class:`~modelpull._oci.auth.RegistryAuth`),
metadata requests are retried as the :class:`~modelpull._transfer.TransferPolicy`
says, and every failure becomes a typed error whose message says what to do.
Blobs are moved by the transfer engine; the client gives it their URLs and
maps the registry's error answers (:meth:`OciClient.error_for_response`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from yarl import URL

from .._lazy import lazy
from .._secrets import Secret
from .._transfer import (
    ServerBusy,
    TooManyRedirects,
    TransferPolicy,
    read_capped,
    retry_after,
    retry_request,
    send,
)
from ..errors import (
    AuthRequired,
    ChecksumMismatch,
    ConnectionFailed,
    InvalidModel,
    InvalidOption,
    ModelNotFound,
    ModelpullError,
    ServerError,
    TransferTimeout,
    UnsafeSource,
)
from .auth import RegistryAuth
from .manifest import (
    MANIFEST_TYPES,
    MAX_MANIFEST_SIZE,
    Descriptor,
    Manifest,
    digest_hex,
    is_index,
    media_type_of,
    parse_index,
    parse_manifest,
)

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_ERROR_BODY = 4096


def registry_url(
    host: str, *, default_host: str, base_url: str | None = None, insecure: bool = False
) -> URL:
    """The registry a name on ``host`` is fetched from.

    A name on the source's ``default_host`` goes to ``base_url`` when one is
    given (a mirror or pull-through cache, its scheme as written); a name
    with its own host goes to that host, whatever ``base_url`` says, over
    https, or http when the caller said ``insecure``.
    """
    if base_url and host == default_host:
        url = URL(base_url.strip())
        if url.scheme not in ("http", "https") or not url.host or url.user or url.query_string or url.fragment:
            raise InvalidOption(
                f"base_url must be http(s)://host[:port][/path] of a registry, got {base_url[:100]!r}"
            )
        return url.with_path(url.path.rstrip("/"))
    return URL(f"{'http' if insecure else 'https'}://{host}")


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest (or index) exactly as the registry served it, its digest checked."""

    body: bytes
    #: the media type the registry announced (``Content-Type``)
    media_type: str
    #: ``sha256:`` of ``body``
    digest: str

    @property
    def is_index(self) -> bool:
        """An index or manifest list: one manifest per platform, not a manifest itself."""
        return is_index(self.media_type, self.body)

    def manifest(self) -> Manifest:
        return parse_manifest(self.body, self.media_type)

    def index(self) -> list[Descriptor]:
        return parse_index(self.body)


class OciClient:
    """The pull side of the distribution API for one registry origin."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        registry: URL,
        policy: TransferPolicy,
        credential: Secret | None = None,
        realm_hosts: Collection[str] = (),
    ) -> None:
        self.session = session
        self.registry = registry
        self.policy = policy
        self.auth = RegistryAuth(registry, credential, realm_hosts)
        self._has_credential = bool(credential)

    # -- URLs --------------------------------------------------------------
    def url(self, repository: str, kind: str, reference: str) -> URL:
        """``<registry>/v2/<repository>/<kind>/<reference>`` (kind: manifests, blobs)."""
        return self.registry / "v2" / check_repository(repository) / kind / reference

    def blob_url(self, repository: str, digest: str) -> str:
        digest_hex(digest)
        return str(self.url(repository, "blobs", digest))

    # -- manifests ---------------------------------------------------------
    async def fetch_manifest(
        self,
        repository: str,
        reference: str,
        accept: Sequence[str] = MANIFEST_TYPES,
        name: str | None = None,
    ) -> FetchedManifest:
        """The manifest ``repository:reference`` (a tag or a ``sha256:`` digest).

        ``accept`` lists the media types the caller can read, preferred first.
        An index answered instead is returned too (see
        :attr:`FetchedManifest.is_index`): the caller decides. ``name`` is how
        messages call the model (default ``repository:reference``). Failed
        attempts are retried as the policy says; raises typed errors.
        """
        check_reference(reference)
        label = name or f"{repository}:{reference}"

        async def once() -> FetchedManifest:
            return await self._manifest_once(repository, reference, accept, label)

        return await retry_request(self.policy, once, what=f"manifest of {label}")

    async def _manifest_once(
        self, repository: str, reference: str, accept: Sequence[str], label: str
    ) -> FetchedManifest:
        url = self.url(repository, "manifests", reference)
        async with self._mapped_errors(f"the manifest of {label}"):
            response = await send(self.session, url, {"Accept": ", ".join(accept)}, self.auth)
            async with response:
                if response.status != 200:
                    body = (await response.content.read(_ERROR_BODY)).decode("utf-8", "replace")
                    raise self._manifest_error(response, body, repository, reference, label)
                return await self._read_manifest(response, reference, label)

    # -- small blobs -------------------------------------------------------
    async def fetch_blob(
        self, repository: str, blob: Descriptor, name: str | None = None, limit: int = MAX_MANIFEST_SIZE
    ) -> bytes:
        """A small blob (a model's config) read into memory and checked against its digest.

        Large blobs go through the transfer engine instead. Refuses a
        descriptor over ``limit`` bytes (:class:`UnsafeSource`); bytes that do
        not match the digest are :class:`ChecksumMismatch`. Retried as the
        policy says; raises typed errors.
        """
        label = name or repository
        if blob.size > limit:
            raise UnsafeSource(
                f"the manifest of {label} gives its config blob {blob.size} bytes; refusing to read "
                f"more than {limit}"
            )
        digest_hex(blob.digest)
        url = self.url(repository, "blobs", blob.digest)

        async def once() -> bytes:
            async with self._mapped_errors(f"the config blob of {label}"):
                response = await send(self.session, url, {}, self.auth)
                async with response:
                    if response.status != 200:
                        text = (await response.content.read(_ERROR_BODY)).decode("utf-8", "replace")
                        raise self._blob_error(response, text, label)
                    body = await read_capped(response, blob.size)
            if len(body) != blob.size or "sha256:" + hashlib.sha256(body).hexdigest() != blob.digest:
                raise ChecksumMismatch(
                    f"the config blob of {label} from {self.registry} does not match its digest "
                    f"{blob.digest}; nothing was written"
                )
            return body

        return await retry_request(self.policy, once, what=f"config blob of {label}")

    def _blob_error(self, response: aiohttp.ClientResponse, body: str, label: str) -> ModelpullError:
        known = self.error_for_response(response, body, label)
        if known is not None:
            return known
        if self.policy.retryable_status(response.status):
            return ServerBusy(
                f"the registry {self.registry} answered HTTP {response.status}; try again later",
                retry_after(response),
            )
        return ServerError(f"the registry {self.registry} answered HTTP {response.status}: {body[:200]}")

    @contextlib.asynccontextmanager
    async def _mapped_errors(self, what: str) -> AsyncIterator[None]:
        """Connection-level failures of a metadata request as typed errors whose message says what to do."""
        try:
            yield
        except TooManyRedirects:
            raise ServerError(f"too many redirects fetching {what}") from None
        except asyncio.TimeoutError:
            raise TransferTimeout(f"the registry {self.registry} did not answer in time") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise _final(ConnectionFailed(
                f"the TLS certificate of {self.registry} is not trusted ({exc.certificate_error}); "
                "modelpull never skips certificate checks"
            )) from None
        except aiohttp.ClientSSLError:
            raise _final(ConnectionFailed(
                f"cannot speak TLS with {self.registry}; if that registry serves plain http, "
                "pass insecure=True (-o insecure=true) or an http:// base_url"
            )) from None
        except aiohttp.ClientConnectorError as exc:
            raise ConnectionFailed(
                f"cannot connect to the registry at {self.registry} ({exc.os_error}); check the "
                "name's host or base_url"
            ) from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"the request to {self.registry} failed: {type(exc).__name__}") from None

    async def _read_manifest(
        self, response: aiohttp.ClientResponse, reference: str, label: str
    ) -> FetchedManifest:
        body = await read_capped(response, MAX_MANIFEST_SIZE)
        if len(body) > MAX_MANIFEST_SIZE:
            raise UnsafeSource(f"the manifest of {label} is larger than {MAX_MANIFEST_SIZE} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        served = response.headers.get("Docker-Content-Digest", "")
        if served.startswith("sha256:") and served != digest:
            raise ServerError(
                f"the manifest of {label} does not match the digest the registry "
                "announced; the transfer was corrupted, try again"
            )
        if reference.startswith("sha256:") and reference != digest:
            raise ServerError(
                f"the manifest of {label} does not match the digest it was asked for; the "
                "transfer was corrupted, try again"
            )
        return FetchedManifest(body, media_type_of(response.headers.get("Content-Type")), digest)

    # -- errors ------------------------------------------------------------
    def _manifest_error(
        self, response: aiohttp.ClientResponse, body: str, repository: str, reference: str,
        label: str,
    ) -> ModelpullError:
        codes = error_codes(body)
        where = f"{self.registry}"
        if response.status in (401, 403) or codes & {"UNAUTHORIZED", "DENIED"}:
            return self.auth_error(response.status, label)
        if response.status == 404 or codes & {"NAME_UNKNOWN", "MANIFEST_UNKNOWN"}:
            what = f"tag {reference!r} of " if "MANIFEST_UNKNOWN" in codes else ""
            return ModelNotFound(
                f"{what}model {repository} was not found on the registry {where}; check the "
                "name and tag"
            )
        if self.policy.retryable_status(response.status):
            return ServerBusy(
                f"the registry {where} answered HTTP {response.status}; try again later",
                retry_after(response),
            )
        return ServerError(f"the registry {where} answered HTTP {response.status}: {body[:200]}")

    def auth_error(self, status: int, label: str) -> AuthRequired:
        """The registry refused us: what to do about it depends on whether we sent a credential."""
        if self._has_credential:
            return AuthRequired(
                f"the registry {self.registry} refused the credential for {label} "
                f"(HTTP {status}); check the token"
            )
        return AuthRequired(
            f"the registry {self.registry} requires credentials for {label} (HTTP {status}); "
            "pass token=... (or --token); 'user:password' works for Basic and token realms"
        )

    def error_for_response(
        self, response: aiohttp.ClientResponse, body: str, name: str | None = None
    ) -> ModelpullError | None:
        """A blob request's error answer as a typed error (the engine's ``error_for_response``).

        None leaves the answer to the engine's own wording (5xx, 416…).
        """
        label = name or "the model"
        codes = error_codes(body)
        if response.status in (401, 403) or codes & {"UNAUTHORIZED", "DENIED"}:
            return self.auth_error(response.status, label)
        if response.status == 404 or "BLOB_UNKNOWN" in codes:
            return ModelNotFound(
                f"the registry {self.registry} is missing a blob of {label}; the model "
                "is incomplete there"
            )
        return None


def check_repository(repository: str) -> str:
    """``namespace/name``: segments of letters, digits, ``._-``; never a path trick."""
    parts = repository.split("/")
    if not all(_SEGMENT.fullmatch(part) for part in parts) or any(".." in part for part in parts):
        raise InvalidModel(f"invalid repository name {repository[:100]!r}")
    return repository


def check_reference(reference: str) -> str:
    """A tag or a ``sha256:`` digest."""
    if reference.startswith("sha256:"):
        digest_hex(reference)
    elif not _TAG.fullmatch(reference):
        raise InvalidModel(f"invalid tag {reference[:100]!r}")
    return reference


def error_codes(body: str) -> set[str]:
    """The ``code`` of each error in a distribution API error body (``{"errors": [...]}``)."""
    try:
        data = json.loads(body)
    except ValueError:
        return set()
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return set()
    return {str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")}


def _final(error: ModelpullError) -> ModelpullError:
    """The same error, marked as one that running the download again will not fix."""
    error.resumable = False
    return error
