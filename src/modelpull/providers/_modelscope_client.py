"""The ModelScope Hub API (``/api/v1``) as the official SDK speaks it (PROTOCOLS.md section 10).

One call matters before any byte moves: the recursive file list, which gives
every file's path, size and sha256. Files are then fetched from
``/api/v1/models/{owner}/{name}/repo?Revision=&FilePath=`` by the transfer
engine, with the credentials of :meth:`ModelScopeClient.auth`.

No retries here: callers wrap :meth:`ModelScopeClient.listing` in the shared
retry policy, and the errors it raises say whether a retry can help.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from .._secrets import Secret, as_secret
from .._transfer import Auth, same_origin
from ..errors import (
    AuthRequired,
    ConnectionFailed,
    InvalidOption,
    ModelNotFound,
    ModelpullError,
    RevisionNotFound,
    ServerError,
    TransferTimeout,
    UnsafeSource,
)
from ..stores.modelscope_cache import split_repo_id
from ..stores.paths import safe_relative

#: modelscope-hub's default endpoint (the China site; the international one is www.modelscope.ai)
DEFAULT_ENDPOINT = "https://modelscope.cn"
#: what the SDK's snapshot_download uses when no revision is given
DEFAULT_REVISION = "master"
#: the server returns at most this many entries from one file list, without saying so
LISTING_CAP = 3000
#: file lists a truncated listing may cost, walking it folder by folder
MAX_LISTING_REQUESTS = 200
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENDPOINT = re.compile(r"https?://[^/\s?#]+(/[^\s?#]*)?")
_USER_AGENT = "modelpull (modelscope-compatible)"


@dataclass(frozen=True)
class RepoFile:
    path: str  # POSIX path in the repo, checked with modelpull.stores.paths.safe_relative
    size: int
    etag: str  # the store's name for the blob: here the sha256 hex
    digest: str  # "sha256:<hex>" (what the transfer engine verifies)


@dataclass
class RepoListing:
    commit: str  # the resolved revision (the Revision the file list reports)
    revision: str  # what was asked for, or the default the SDK would choose
    files: list[RepoFile]


def resolve_endpoint(base_url: str | None) -> str:
    """``base_url``, else ``MODELSCOPE_ENDPOINT`` (a URL), else ``MODELSCOPE_DOMAIN`` (a host),
    else the public site."""
    chosen = base_url or os.environ.get("MODELSCOPE_ENDPOINT", "").strip()
    if not chosen:
        domain = os.environ.get("MODELSCOPE_DOMAIN", "").strip()
        # the SDK puts https:// in front of a bare host and keeps a scheme that is there
        if domain:
            has_scheme = re.match(r"https?://", domain, re.IGNORECASE)
            chosen = domain if has_scheme else f"https://{domain}"
    chosen = (chosen or DEFAULT_ENDPOINT).rstrip("/")
    if not _ENDPOINT.fullmatch(chosen):
        raise InvalidOption(
            f"the ModelScope endpoint must be an http(s) URL such as {DEFAULT_ENDPOINT}, "
            f"got {chosen[:80]!r}"
        )
    return chosen


class ModelScopeAuth:
    """The token as the SDK sends it (cookie m_session_id and Bearer), to its own origin only."""

    def __init__(self, token: Secret | None, origin: str | URL) -> None:
        self._token = token
        self._origin = URL(str(origin))

    def headers_for(self, url: URL) -> dict[str, str]:
        if not self._token or not same_origin(url, self._origin):
            return {}
        value = self._token.reveal()
        return {"Authorization": f"Bearer {value}", "Cookie": f"m_session_id={value}"}

    async def refresh(
        self, session: aiohttp.ClientSession, response: aiohttp.ClientResponse
    ) -> bool:
        return False

    def __repr__(self) -> str:
        shown = "***" if self._token else None
        return f"ModelScopeAuth(origin={str(self._origin)!r}, token={shown})"


class ModelScopeClient:
    """Metadata and URLs of one ModelScope endpoint."""

    def __init__(self, endpoint: str | None, token: Secret | None, timeout: float) -> None:
        self.endpoint = resolve_endpoint(endpoint)
        self.token = token or as_secret(os.environ.get("MODELSCOPE_API_TOKEN"))
        self.timeout = timeout
        #: a file list this long may have been cut by the server, so it is walked by folder
        self.listing_cap = LISTING_CAP

    def __repr__(self) -> str:
        shown = "***" if self.token else None
        return f"ModelScopeClient(endpoint={self.endpoint!r}, token={shown})"

    # -- URLs and credentials ----------------------------------------------------
    def _api(self, repo_id: str, tail: str = "") -> URL:
        owner, name = split_repo_id(repo_id)
        base = f"{self.endpoint}/api/v1/models/{quote(owner)}/{quote(name)}"
        return URL(base + tail, encoded=True)

    def file_url(self, repo_id: str, path: str, commit: str) -> str:
        """Where the SDK downloads ``path`` at revision ``commit`` (a branch, tag or commit id)."""
        safe_relative(path)
        query = f"Revision={quote(commit, safe='')}&FilePath={quote(path, safe='')}"
        return f"{self._api(repo_id, '/repo')}?{query}"

    def auth(self) -> Auth:
        return ModelScopeAuth(self.token, self.endpoint)

    # -- the file list ------------------------------------------------------------
    async def listing(
        self, session: aiohttp.ClientSession, repo_id: str, revision: str | None
    ) -> RepoListing:
        """Every file of ``repo_id`` at ``revision`` (default ``master``), with size and sha256."""
        wanted = revision or DEFAULT_REVISION
        entries = await self._files(session, repo_id, wanted, root=None, recursive=True)
        if len(entries) >= self.listing_cap:
            entries = await self._walk(session, repo_id, wanted, entries)
        files: dict[str, RepoFile] = {}
        newest: tuple[int, str] | None = None
        for entry in entries:
            if not isinstance(entry, dict):
                raise ServerError(f"{self.endpoint} sent a malformed file list for {repo_id}")
            if (entry.get("Type") or "blob") == "tree":
                continue
            repo_file = _repo_file(entry, repo_id)
            if files.setdefault(repo_file.path, repo_file) != repo_file:
                raise UnsafeSource(f"the file list of {repo_id} names {repo_file.path!r} twice")
            commit = entry.get("Revision")
            if isinstance(commit, str) and commit:
                when = entry.get("CommittedDate")
                stamp = (when if isinstance(when, int) else 0, commit)
                newest = stamp if newest is None or stamp > newest else newest
        # Files carry the commit that last changed each of them; the newest is the revision's head.
        commit = newest[1] if newest else wanted
        return RepoListing(commit, wanted, sorted(files.values(), key=lambda f: f.path))

    async def _walk(
        self, session: aiohttp.ClientSession, repo_id: str, revision: str, first: list[Any]
    ) -> list[Any]:
        """A list cut at the server's cap, completed one folder at a time (as the SDK does)."""
        collected = {_entry_path(e): e for e in first if isinstance(e, dict)}
        truncated = [""]  # folders whose recursive list came back at the cap
        requests = 0
        while truncated:
            root = truncated.pop()
            shallow = await self._files(session, repo_id, revision, root=root, recursive=False)
            requests += 1
            if len(shallow) >= self.listing_cap:
                raise ServerError(
                    f"{self.endpoint} holds more entries in folder {root or '/'!r} of {repo_id} "
                    "than it lists in one answer; the file list would be incomplete"
                )
            for entry in shallow:
                if not isinstance(entry, dict):
                    continue
                collected.setdefault(_entry_path(entry), entry)
                if entry.get("Type") != "tree":
                    continue
                folder = _entry_path(entry)
                deep = await self._files(session, repo_id, revision, root=folder, recursive=True)
                requests += 1
                for inner in deep:
                    if isinstance(inner, dict):
                        collected.setdefault(_entry_path(inner), inner)
                if len(deep) >= self.listing_cap:
                    truncated.append(folder)
                if requests >= MAX_LISTING_REQUESTS:
                    raise ServerError(
                        f"listing {repo_id} on {self.endpoint} took more than "
                        f"{MAX_LISTING_REQUESTS} requests; the file list would be incomplete"
                    )
        return list(collected.values())

    async def _files(
        self,
        session: aiohttp.ClientSession,
        repo_id: str,
        revision: str,
        *,
        root: str | None,
        recursive: bool,
    ) -> list[Any]:
        query = {"Revision": revision, "Recursive": str(recursive)}
        if root:
            query["Root"] = root
        url = self._api(repo_id, "/repo/files").with_query(query)
        status, body, request_id = await self._get(session, url)
        if status != 200:
            raise await self._listing_error(session, repo_id, revision, status, body, request_id)
        data = body.get("Data") if isinstance(body, dict) else None
        files = data.get("Files") if isinstance(data, dict) else data
        if files is None:
            files = []
        if not isinstance(files, list):
            raise ServerError(
                f"{self.endpoint} sent a file list for {repo_id} without Data.Files"
                f"{_request_id_note(request_id)}"
            )
        return files

    async def _get(self, session: aiohttp.ClientSession, url: URL) -> tuple[int, Any, str]:
        """GET a JSON API URL: (status, decoded body or None, request id for messages)."""
        sent_id = uuid.uuid4().hex
        headers = {"X-Request-ID": sent_id, "User-Agent": _USER_AGENT, "Accept": "application/json"}
        headers.update(self.auth().headers_for(url))
        try:
            async with session.get(
                url,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                text = await response.text(errors="replace")
                status = response.status
                header_id = response.headers.get("X-Request-ID", "")
        except asyncio.TimeoutError:
            raise TransferTimeout(
                f"{self.endpoint} did not answer within {self.timeout:g} s; try again later"
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise ConnectionFailed(
                f"could not reach {self.endpoint} ({type(exc).__name__}); check the network, "
                "MODELSCOPE_ENDPOINT or base_url"
            ) from None
        except aiohttp.ClientError as exc:
            raise ServerError(f"{self.endpoint} answered badly ({type(exc).__name__})") from None
        body = _json_or_none(text)
        body_id = body.get("RequestId") if isinstance(body, dict) else None
        request_id = str(body_id or header_id or sent_id)[:100]
        if status == 200 and isinstance(body, dict) and _failed_envelope(body):
            # the old SDK checks the envelope too: Code 200 and Success true mean OK
            code = body.get("Code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
        return status, body, request_id

    async def _listing_error(
        self,
        session: aiohttp.ClientSession,
        repo_id: str,
        revision: str,
        status: int,
        body: Any,
        request_id: str,
    ) -> ModelpullError:
        if status == 404:
            # a 404 on the file list means no such model or no such revision;
            # the model's page tells which
            info_status, _, _ = await self._get(session, self._api(repo_id))
            if info_status == 200:
                return RevisionNotFound(
                    f"{repo_id} has no revision {revision!r} on {self.endpoint}; check the "
                    f"branch, tag or commit{_request_id_note(request_id)}"
                )
            if info_status in (401, 403):
                status = info_status
            else:
                return ModelNotFound(
                    f"{repo_id} was not found on {self.endpoint}; check the model id (private "
                    f"models need a token){_request_id_note(request_id)}"
                )
        error = self._status_error(status, repo_id, _message_of(body), request_id)
        return error or ServerError(
            f"{self.endpoint} answered HTTP {status} for the file list of {repo_id}"
            f"{_message_note(body)}{_request_id_note(request_id)}"
        )

    def _status_error(
        self, status: int, repo_id: str, message: str, request_id: str
    ) -> ModelpullError | None:
        note = f"{_quoted(message)}{_request_id_note(request_id)}"
        if status in (401, 403):
            if self.token:
                return AuthRequired(
                    f"{self.endpoint} refused the token for {repo_id} (HTTP {status}): the token "
                    f"is invalid or its account has no access to this model{note}"
                )
            return AuthRequired(
                f"{repo_id} on {self.endpoint} needs a token (HTTP {status}): pass one or set "
                f"MODELSCOPE_API_TOKEN (an SDK token from your ModelScope account){note}"
            )
        if status == 429:
            return ServerError(
                f"{self.endpoint} is rate limiting requests (HTTP 429){note}; try again later"
            )
        if status >= 500:
            return ServerError(f"{self.endpoint} failed with HTTP {status}{note}; try again later")
        return None

    def error_for_response(
        self, response: aiohttp.ClientResponse, body: str
    ) -> ModelpullError | None:
        """The error a failed file download stands for, or None to let the engine decide."""
        if response.status < 400:
            return None
        decoded = _json_or_none(body)
        body_id = decoded.get("RequestId") if isinstance(decoded, dict) else None
        request_id = str(body_id or response.headers.get("X-Request-ID") or "")[:100]
        path = response.url.query.get("FilePath") or "a file"
        repo_id = _repo_of(response.url) or "the model"
        if response.status == 404:
            return ModelNotFound(
                f"{path} of {repo_id} is not on {self.endpoint} at this revision (it may have "
                "changed since the file list); run the download again"
                f"{_request_id_note(request_id)}"
            )
        return self._status_error(response.status, repo_id, _message_of(decoded), request_id)


def _repo_file(entry: dict[str, Any], repo_id: str) -> RepoFile:
    path = _entry_path(entry)
    safe_relative(path)
    size = entry.get("Size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UnsafeSource(f"the file list of {repo_id} gives {path!r} an invalid size {size!r}")
    sha256 = entry.get("Sha256")
    if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256.lower()):
        raise UnsafeSource(
            f"the file list of {repo_id} gives {path!r} no valid sha256, so it could not be "
            "verified"
        )
    sha256 = sha256.lower()
    return RepoFile(path, size, sha256, f"sha256:{sha256}")


def _entry_path(entry: dict[str, Any]) -> str:
    path = entry.get("Path") or entry.get("Name") or ""
    return path if isinstance(path, str) else ""


def _repo_of(url: URL) -> str | None:
    match = re.search(r"/api/v1/models/([^/]+/[^/]+)/", url.path)
    return match.group(1) if match else None


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _failed_envelope(body: dict[str, Any]) -> bool:
    code = body.get("Code")
    return body.get("Success") is False or (isinstance(code, int) and code != 200 and code >= 400)


def _message_of(body: Any) -> str:
    message = body.get("Message") if isinstance(body, dict) else None
    return message.strip()[:200] if isinstance(message, str) else ""


def _quoted(message: str) -> str:
    return f": {message!r}" if message else ""


def _message_note(body: Any) -> str:
    return _quoted(_message_of(body))


def _request_id_note(request_id: str) -> str:
    return f" (request id {request_id})" if request_id else ""


__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_REVISION",
    "ModelScopeAuth",
    "ModelScopeClient",
    "RepoFile",
    "RepoListing",
    "resolve_endpoint",
]
