"""The Hugging Face Hub's API as modelpull uses it: endpoint, token, file list, errors.

Requests are the ones ``huggingface_hub`` makes (PROTOCOLS.md §5), sent over
the download's own HTTP session so they share its timeouts, its stall
detection and its cancellation:

- ``GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true`` - the
  commit and every file with its size and LFS sha256 / git blob id;
- ``HEAD {endpoint}/{repo}/resolve/{commit}/{path}`` - size and ETag of a file
  the listing does not describe (relative redirects followed, others not);
- ``GET`` of the same URL for the bytes (the transfer engine).

Errors are read as huggingface_hub reads them: ``X-Error-Code`` first
(``GatedRepo`` before ``RepoNotFound``: a gated repo is not a missing one),
then the status.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .._safepath import safe_relative
from .._secrets import Secret, as_secret
from .._transfer import BearerAuth, retry_request
from ..errors import (
    AuthRequired,
    ConnectionFailed,
    GatedModel,
    InvalidOption,
    ModelNotFound,
    ModelpullError,
    RevisionNotFound,
    ServerError,
    TransferTimeout,
    UnsafeSource,
)
from ..stores.hf_cache import hf_home
from ._repo import FileSelector, RepoFile, RepoListing

if TYPE_CHECKING:
    import aiohttp

    from .._transfer import Auth, TransferPolicy

__all__ = ["DEFAULT_ENDPOINT", "HubClient", "hub_endpoint", "resolve_token"]

DEFAULT_ENDPOINT = "https://huggingface.co"
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: the largest repo listing we read (the biggest real ones are a few MB)
_MAX_LISTING = 64 << 20
_MAX_REDIRECTS = 5
#: files described at once when the listing lacks their metadata
_DESCRIBE_AT_ONCE = 8
_OFFLINE_VALUES = ("1", "ON", "YES", "TRUE")


def hub_endpoint(base_url: str | None) -> str:
    """``base_url``, else ``HF_ENDPOINT``, else the public Hub; checked to be an http(s) URL."""
    endpoint = base_url or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    if not re.match(r"https?://[^/\s]+", endpoint):
        raise InvalidOption(f"base_url must be an http(s) URL of a Hub endpoint, got {endpoint!r}")
    return endpoint.rstrip("/")


def resolve_token(token: Secret | None) -> Secret | None:
    """The argument, else ``HF_TOKEN``, else the stored login (``hf auth login``)."""
    if token:
        return token
    if os.environ.get("HF_TOKEN"):
        return as_secret(os.environ["HF_TOKEN"])
    if not _stored_token_possible():
        return None
    from huggingface_hub import get_token

    return as_secret(get_token())


def _stored_token_possible() -> bool:
    """Could huggingface_hub's ``get_token`` find a token? Asked first because importing it costs
    a pull about 35 ms before its first request: its other ways (the older variable, OIDC in CI,
    the staging Hub, Colab's secrets in a notebook) and the token file ``hf auth login`` writes."""
    if any(os.environ.get(name) for name in ("HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HUGGINGFACE_CO_STAGING")):
        return True
    if "IPython" in sys.modules:
        return True
    path = os.environ.get("HF_TOKEN_PATH") or str(hf_home() / "token")
    return os.path.exists(os.path.expandvars(os.path.expanduser(path)))


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as huggingface_hub reads it."""
    return any(
        os.environ.get(name, "").upper() in _OFFLINE_VALUES
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


class HubClient:
    """One Hub endpoint and the token for it."""

    def __init__(self, base_url: str | None, token: Secret | None) -> None:
        self.endpoint = hub_endpoint(base_url)
        self._token = resolve_token(token)

    @property
    def token(self) -> Secret | None:
        return self._token

    @property
    def offline(self) -> bool:
        return hub_offline()

    def auth(self) -> Auth:
        return BearerAuth(self._token, self.endpoint)

    def file_url(self, repo_id: str, path: str, commit: str) -> str:
        return f"{self.endpoint}/{repo_id}/resolve/{quote(commit, safe='')}/{quote(path)}"

    # -- the listing ---------------------------------------------------------
    async def listing(
        self, session: aiohttp.ClientSession, policy: TransferPolicy, repo_id: str, revision: str,
        wanted: FileSelector,
    ) -> RepoListing:
        if hub_offline():
            raise ConnectionFailed(
                f"HF_HUB_OFFLINE is set, so {self.endpoint} cannot be reached; unset it to download"
            )
        url = f"{self.endpoint}/api/models/{repo_id}/revision/{quote(revision, safe='')}?blobs=true"
        info = await retry_request(
            policy, lambda: self._get_json(session, url, repo_id, revision), what="Hub listing"
        )
        commit = info.get("sha") if isinstance(info, dict) else None
        if not isinstance(commit, str) or not _HEX40.fullmatch(commit):
            raise ServerError(f"{self.endpoint} gave no valid commit for {repo_id}")
        siblings: dict[str, dict[str, Any]] = {}
        for sibling in info.get("siblings") or []:
            path = sibling.get("rfilename") if isinstance(sibling, dict) else None
            safe_relative(path)  # type: ignore[arg-type]
            siblings[str(path)] = sibling
        limit = asyncio.Semaphore(_DESCRIBE_AT_ONCE)

        async def describe(path: str) -> RepoFile:
            async with limit:
                return await self._describe(session, policy, repo_id, revision, siblings[path], commit)

        chosen = wanted.wanted(sorted(siblings))
        files = list(await asyncio.gather(*(describe(p) for p in chosen)))
        return RepoListing(commit, files, _tree(siblings.values()))

    async def _describe(
        self, session: aiohttp.ClientSession, policy: TransferPolicy, repo_id: str, revision: str,
        sibling: dict[str, Any], commit: str,
    ) -> RepoFile:
        path = str(sibling["rfilename"])
        lfs = sibling.get("lfs") if isinstance(sibling.get("lfs"), dict) else None
        size = sibling.get("size")
        sha256 = (lfs.get("sha256") or lfs.get("oid")) if lfs else None
        blob_id = sibling.get("blobId")
        if size is None or (sha256 is None and blob_id is None):
            url = self.file_url(repo_id, path, commit)
            size, etag = await retry_request(
                policy, lambda: self._head(session, url, repo_id, revision, path), what="Hub file metadata"
            )
            sha256 = etag if _HEX64.fullmatch(etag) else None
            blob_id = etag if sha256 is None else None
        if sha256 is not None:
            if not _HEX64.fullmatch(str(sha256)):
                raise UnsafeSource(f"the Hub gave an invalid sha256 for {path}")
            etag, digest = str(sha256), f"sha256:{sha256}"
        else:
            if not _HEX40.fullmatch(str(blob_id)):
                raise UnsafeSource(f"the Hub gave an invalid blob id for {path}")
            etag, digest = str(blob_id), f"gitsha1:{blob_id}"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UnsafeSource(f"the Hub gave an invalid size for {path}")
        return RepoFile(path, size, etag, digest)

    # -- requests --------------------------------------------------------------
    async def _get_json(
        self, session: aiohttp.ClientSession, url: str, repo_id: str, revision: str
    ) -> Any:
        status, headers, raw = await self._request(session, "GET", url, _MAX_LISTING + 1)
        if status != 200:
            raise self._error(repo_id, revision, status, headers, api=True)
        if len(raw) > _MAX_LISTING:
            raise UnsafeSource(f"{self.endpoint} sent a listing larger than {_MAX_LISTING} bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerError(f"{self.endpoint} sent a listing of {repo_id} that is not JSON") from None

    async def _head(
        self, session: aiohttp.ClientSession, url: str, repo_id: str, revision: str, path: str
    ) -> tuple[int, str]:
        from yarl import URL

        current = URL(url, encoded=True)
        for _ in range(_MAX_REDIRECTS + 1):
            status, headers, _ = await self._request(session, "HEAD", str(current), 0)
            location = headers.get("Location")
            if status in (301, 302, 303, 307, 308) and location:
                target = URL(location, encoded=True)
                if not target.is_absolute():  # huggingface_hub follows only relative redirects
                    current = current.join(target)
                    continue
            elif status >= 400:
                raise self._error(repo_id, revision, status, headers, api=False, path=path)
            size = headers.get("X-Linked-Size") or (
                None if status // 100 == 3 else headers.get("Content-Length")
            )
            etag = headers.get("X-Linked-Etag") or headers.get("ETag") or ""
            etag = etag.strip().removeprefix("W/").strip('"')
            if not size or not size.isdigit() or not etag:
                raise ServerError(f"{self.endpoint} gave no size or ETag for {path}")
            return int(size), etag
        raise ServerError(f"too many redirects describing {path} on {self.endpoint}")

    async def _request(
        self, session: aiohttp.ClientSession, method: str, url: str, limit: int
    ) -> tuple[int, Any, bytes]:
        """(status, headers, up to ``limit`` bytes of body); transport failures typed."""
        import aiohttp
        from yarl import URL

        headers = {"Accept": "application/json", **self.auth().headers_for(URL(url, encoded=True))}
        if method == "HEAD":
            headers["Accept-Encoding"] = "identity"  # the real size, not a compressed one
        try:
            async with session.request(
                method, URL(url, encoded=True), headers=headers, allow_redirects=False
            ) as response:
                body = await response.content.read(limit) if limit and response.status == 200 else b""
                return response.status, response.headers, body
        except asyncio.TimeoutError:
            raise TransferTimeout(f"{self.endpoint} did not answer in time (timeout)") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(
                f"cannot connect to the Hub at {self.endpoint} ({type(exc).__name__}); check "
                "the address (base_url / HF_ENDPOINT) and your network"
            ) from None

    # -- errors --------------------------------------------------------------
    def _error(
        self, repo_id: str, revision: str, status: int, headers: Any, *, api: bool, path: str | None = None
    ) -> ModelpullError:
        code = headers.get("X-Error-Code")
        message = headers.get("X-Error-Message")
        if code == "GatedRepo":
            return self.gated(repo_id)
        if code == "RevisionNotFound":
            return RevisionNotFound(
                f"{repo_id} has no revision {revision!r}; check the branch, tag or commit"
            )
        if code == "EntryNotFound":
            return ModelNotFound(f"a file of {repo_id} is missing at {self.endpoint}")
        if code == "RepoNotFound":
            return self.not_found(repo_id)
        if status == 401 and api and message != "Invalid credentials in Authorization header":
            return self.auth_required(repo_id)  # the Hub's 401 for a private repo without a token
        if status in (401, 403):
            return self.auth_required(repo_id)
        if status == 404:
            return self.not_found(repo_id)
        return ServerError(f"{self.endpoint} answered HTTP {status} for {repo_id}; try again later")

    def error_for_response(
        self, repo_id: str, revision: str, response: aiohttp.ClientResponse, body: str
    ) -> ModelpullError | None:
        code = response.headers.get("X-Error-Code")
        if code == "GatedRepo":
            return self.gated(repo_id)
        if code == "RepoNotFound":
            return self.not_found(repo_id)
        if code == "RevisionNotFound":
            return RevisionNotFound(f"{repo_id} has no revision {revision!r}")
        if code == "EntryNotFound":
            path = response.url.path.split("/resolve/", 1)[-1].partition("/")[2] or "a file"
            return ModelNotFound(
                f"{path} of {repo_id} is no longer on {self.endpoint} (it changed since the "
                "plan); run the download again"
            )
        if response.status == 401:
            return self.auth_required(repo_id)
        return None

    def gated(self, repo_id: str) -> GatedModel:
        page = f"{self.endpoint}/{repo_id}"
        if self._token:
            return GatedModel(
                f"{repo_id} is gated and the token you gave has no access yet: request "
                f"access on {page} (accept the conditions), then run the download again"
            )
        return GatedModel(
            f"{repo_id} is gated: request access on {page}, then pass a token "
            "(token=..., the HF_TOKEN variable, or `hf auth login`)"
        )

    def auth_required(self, repo_id: str) -> AuthRequired:
        if self._token:
            return AuthRequired(
                f"{self.endpoint} rejected the token for {repo_id}; check that it is valid "
                "and has read access"
            )
        return AuthRequired(
            f"{self.endpoint} requires a token for {repo_id}: pass token=..., set HF_TOKEN "
            "or run `hf auth login`"
        )

    def not_found(self, repo_id: str) -> ModelNotFound:
        hint = "" if self._token else " (if it is private, pass a token)"
        return ModelNotFound(
            f"model {repo_id!r} was not found on {self.endpoint}{hint}; check the repo id"
        )

    def __repr__(self) -> str:
        return f"HubClient(endpoint={self.endpoint!r}, token={'***' if self._token else None})"


def _tree(siblings: Any) -> dict[str, dict[str, Any]] | None:
    """The repo's full listing in huggingface_hub's tree-cache form, if every file is described."""
    tree: dict[str, dict[str, Any]] = {}
    for sibling in siblings:
        size, blob_id = sibling.get("size"), sibling.get("blobId")
        if not isinstance(size, int) or not isinstance(blob_id, str) or not _HEX40.fullmatch(blob_id):
            return None
        entry: dict[str, Any] = {"size": size, "blob_id": blob_id}
        lfs = sibling.get("lfs")
        if isinstance(lfs, dict):
            sha256 = lfs.get("sha256") or lfs.get("oid")
            if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
                return None
            entry["lfs_sha256"], entry["lfs_size"] = sha256, lfs.get("size", size)
        tree[str(sibling["rfilename"])] = entry
    return tree
