"""The ModelScope Hub API (``/api/v1``) as the official SDK speaks it (PROTOCOLS.md section 10).

One call matters before any byte moves: the recursive file list, which gives
every file's path, size, sha256 and the commit that last changed it. Files are
then fetched from ``/api/v1/models/{owner}/{name}/repo?Revision=&FilePath=``
by the transfer engine, with the credentials of :meth:`ModelScopeClient.auth`.
Like the SDKs, downloads name the branch or tag asked for (the listing's
``ref``), not a commit.

:class:`ModelScopeClient` is a :class:`~modelpull.providers._repo.RepoClient`:
its file list goes through the transfer policy's retries (a 429 or 5xx, a
broken or silent connection), and the errors it raises say whether a retry
can help.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from yarl import URL

from .._lazy import lazy
from .._safepath import safe_relative
from .._secrets import Secret, as_secret
from .._transfer import Auth, ServerBusy, read_capped, retry_after, retry_request, same_origin
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
from ._repo import RepoFile, RepoListing

if TYPE_CHECKING:
    from .._transfer import TransferPolicy
    from ._repo import FileSelector

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")

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
#: a commit id as the file list names it (kept in the old SDK's index)
_COMMIT = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_USER_AGENT = "modelpull (modelscope-compatible)"
#: the largest API answer read (a file list of the server's 3000 entries is about 2 MB)
_MAX_ANSWER = 64 << 20


class _Answer(NamedTuple):
    """An API answer: status (the envelope's Code when it failed), body, ids for messages."""

    status: int
    body: Any
    request_id: str
    retry_after: float | None


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
    """Metadata and URLs of one ModelScope endpoint.

    ``endpoint``: see :func:`resolve_endpoint`. ``token``: else
    ``MODELSCOPE_API_TOKEN``. ``timeout``: seconds one API request may take in
    all (None: the session's own connect and stall timeouts).
    """

    def __init__(
        self, endpoint: str | None, token: Secret | None, timeout: float | None = None
    ) -> None:
        self.endpoint = resolve_endpoint(endpoint)
        self._token = token or as_secret(os.environ.get("MODELSCOPE_API_TOKEN"))
        self.timeout = timeout
        #: a file list this long may have been cut by the server, so it is walked by folder
        self.listing_cap = LISTING_CAP

    @property
    def token(self) -> Secret | None:
        return self._token

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
        self, session: aiohttp.ClientSession, policy: TransferPolicy, repo_id: str,
        revision: str | None, wanted: FileSelector | None = None,
    ) -> RepoListing:
        """The files of ``repo_id`` at ``revision`` (default ``master``) with size and sha256.

        Every path of the list is checked; only the files ``wanted`` chooses
        (all without a selector) are described and returned. Each API request
        is retried as ``policy`` says.
        """
        asked = revision or DEFAULT_REVISION
        split_repo_id(repo_id)  # an invalid id never reaches the network

        async def files(root: str | None, recursive: bool) -> list[Any]:
            return await retry_request(
                policy, lambda: self._files(session, repo_id, asked, root=root, recursive=recursive),
                what="ModelScope file list",
            )

        entries = await files(None, True)
        if len(entries) >= self.listing_cap:
            entries = await self._walk(files, repo_id, entries)
        blobs: dict[str, dict[str, Any]] = {}
        newest: tuple[int, str] | None = None
        for entry in entries:
            if not isinstance(entry, dict):
                raise ServerError(f"{self.endpoint} sent a malformed file list for {repo_id}")
            if (entry.get("Type") or "blob") == "tree":
                continue
            path = _entry_path(entry)
            safe_relative(path)
            if path in blobs and blobs[path] != entry:
                raise UnsafeSource(f"the file list of {repo_id} names {path!r} twice")
            blobs[path] = entry
            commit = entry.get("Revision")
            if isinstance(commit, str) and _COMMIT.fullmatch(commit):
                when = entry.get("CommittedDate")
                stamp = (when if isinstance(when, int) else 0, commit)
                newest = stamp if newest is None or stamp > newest else newest
        chosen = wanted.wanted(sorted(blobs)) if wanted is not None else sorted(blobs)
        described = [_repo_file(blobs[path], repo_id) for path in chosen]
        file_commits = {
            path: str(blobs[path]["Revision"]) for path in chosen
            if isinstance(blobs[path].get("Revision"), str) and _COMMIT.fullmatch(blobs[path]["Revision"])
        }
        # Files carry the commit that last changed each of them; the newest is the revision's head.
        commit = newest[1] if newest else asked
        return RepoListing(
            commit, sorted(described, key=lambda f: f.path), tree=_tree(blobs), file_commits=file_commits,
            ref=asked,
        )

    async def _walk(
        self, files: Callable[[str | None, bool], Awaitable[list[Any]]], repo_id: str,
        first: list[Any],
    ) -> list[Any]:
        """A list cut at the server's cap, completed one folder at a time (as the SDK does).

        ``files(root, recursive)`` fetches one list.
        """
        collected = {_entry_path(e): e for e in first if isinstance(e, dict)}
        truncated = [""]  # folders whose recursive list came back at the cap
        requests = 0
        while truncated:
            root = truncated.pop()
            shallow = await files(root, False)
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
                deep = await files(folder, True)
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
        answer = await self._get(session, url)
        body, request_id = answer.body, answer.request_id
        if answer.status != 200:
            raise await self._listing_error(session, repo_id, revision, answer)
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

    async def _get(self, session: aiohttp.ClientSession, url: URL) -> _Answer:
        """GET a JSON API URL; transport failures raised typed."""
        sent_id = uuid.uuid4().hex
        headers = {"X-Request-ID": sent_id, "User-Agent": _USER_AGENT, "Accept": "application/json"}
        headers.update(self.auth().headers_for(url))
        timeout = aiohttp.ClientTimeout(total=self.timeout) if self.timeout else None
        try:
            async with session.get(
                url, headers=headers, allow_redirects=False, **({"timeout": timeout} if timeout else {})
            ) as response:
                raw = await read_capped(response, _MAX_ANSWER)
                status = response.status
                header_id = response.headers.get("X-Request-ID", "")
                wait = retry_after(response)
        except asyncio.TimeoutError:
            raise TransferTimeout(f"{self.endpoint} did not answer in time; try again later") from None
        except aiohttp.ClientConnectionError as exc:
            raise ConnectionFailed(
                f"could not reach {self.endpoint} ({type(exc).__name__}); check the network, "
                "MODELSCOPE_ENDPOINT or base_url"
            ) from None
        except aiohttp.ClientError as exc:
            raise ServerError(f"{self.endpoint} answered badly ({type(exc).__name__})") from None
        if len(raw) > _MAX_ANSWER:
            raise UnsafeSource(f"{self.endpoint} sent an answer larger than {_MAX_ANSWER} bytes")
        body = _json_or_none(raw.decode("utf-8", "replace"))
        body_id = body.get("RequestId") if isinstance(body, dict) else None
        request_id = str(body_id or header_id or sent_id)[:100]
        if status == 200 and isinstance(body, dict) and _failed_envelope(body):
            # the old SDK checks the envelope too: Code 200 and Success true mean OK
            code = body.get("Code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
        return _Answer(status, body, request_id, wait)

    async def _listing_error(
        self, session: aiohttp.ClientSession, repo_id: str, revision: str, answer: _Answer
    ) -> ModelpullError:
        status, body, request_id = answer.status, answer.body, answer.request_id
        if status == 404:
            # a 404 on the file list means no such model or no such revision;
            # the model's page tells which
            info_status = (await self._get(session, self._api(repo_id))).status
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
        error = self._status_error(status, repo_id, _message_of(body), request_id, answer.retry_after)
        return error or ServerError(
            f"{self.endpoint} answered HTTP {status} for the file list of {repo_id}"
            f"{_message_note(body)}{_request_id_note(request_id)}"
        )

    def _status_error(
        self, status: int, repo_id: str, message: str, request_id: str,
        wait: float | None = None,
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
            return ServerBusy(
                f"{self.endpoint} is rate limiting requests (HTTP 429){note}; try again later", wait
            )
        if status >= 500:
            return ServerBusy(
                f"{self.endpoint} failed with HTTP {status}{note}; try again later", wait
            )
        return None

    def error_for_response(
        self, repo_id: str, revision: str, response: aiohttp.ClientResponse, body: str
    ) -> ModelpullError | None:
        """The error a failed file download stands for, or None to let the engine decide."""
        if response.status < 400:
            return None
        decoded = _json_or_none(body)
        body_id = decoded.get("RequestId") if isinstance(decoded, dict) else None
        request_id = str(body_id or response.headers.get("X-Request-ID") or "")[:100]
        path = response.url.query.get("FilePath") or "a file"
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
    "resolve_endpoint",
]


def _tree(blobs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """The whole repo's listing (path -> size and sha256), kept with a download for offline runs."""
    tree: dict[str, dict[str, Any]] = {}
    for path, entry in blobs.items():
        size, sha256 = entry.get("Size"), entry.get("Sha256")
        if not isinstance(size, int) or not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
            return None
        tree[path] = {"size": size, "lfs_sha256": sha256}
    return tree
