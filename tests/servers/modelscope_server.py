"""A ModelScope Hub server for the tests, following docs PROTOCOLS.md section 10.

Everything is under ``/api/v1/models/{owner}/{name}``:

* ``GET`` (optionally ``?Revision=``) - model info in ``Data``.
* ``GET /revisions[?EndTime=<unix>]`` - ``Data.RevisionMap.Branches[]`` and
  ``.Tags[]`` (each ``Revision``, ``CreatedAt``, ``CommitId``), tags newest first.
* ``GET /repo/files?Revision=<rev>&Recursive=True|False[&Root=<dir>]`` -
  ``Data.Files[]`` with ``Name``, ``Path``, ``Type`` (``blob``/``tree``),
  ``Size``, ``Sha256``, ``Revision`` (the commit that last changed the file,
  so files of one listing may name different commits), ``CommittedDate``,
  ``IsLFS``, ``Mode``, ``CommitMessage``. Without ``Revision``: ``master``.
* ``GET /repo?Revision=<rev>&FilePath=<path>`` - the file's bytes; ``Range:
  bytes=a-b`` / ``bytes=a-`` answered with ``206`` and ``Content-Range``
  (``416`` past the end), unless :attr:`ModelScopeServer.ignore_range` is set;
  :attr:`ModelScopeServer.bytes_per_sec` throttles each download.

A revision is a branch, a tag or a full commit id. The official SDK also asks
``GET /api/v1/repos/internalAccelerationInfo`` (an Alibaba Cloud region probe);
it gets what a machine outside Alibaba Cloud gets: no query address.

Errors are the JSON envelope ``{"Code", "Success": false, "Message", "Data":
null, "RequestId"}`` with the same id in the ``X-Request-ID`` header: 404 for
an unknown model, revision or file; for a private model 401 without a
credential and 403 with a wrong one. A credential is the cookie
``m_session_id=<token>`` or ``Authorization: Bearer <token>`` (the official
SDK sends both). :meth:`ModelScopeServer.fail` answers the next requests with
a 5xx. Every request is logged (:class:`MsRequest`; whether a credential came,
never its value) and file bytes are counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from . import LOOPBACK, BackgroundAiohttpServer, transport_gone

DEFAULT_REVISION = "master"
LISTING_CAP = 3000
#: ``CommittedDate``/``CreatedAt`` of the first commit; later ones count up from here
FIRST_COMMIT_TIME = 1_700_000_000
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_SEGMENT = r"[A-Za-z0-9_.-]+"
_SECRET_HEADERS = frozenset({"authorization", "cookie"})


@dataclass
class MsRequest:
    """One request the server answered."""

    method: str
    path: str
    query: dict[str, str]
    range: str | None
    cookie_credential: bool  # an m_session_id cookie came (its value is never kept)
    bearer_credential: bool  # an Authorization header came (its value is never kept)
    headers: dict[str, str]  # as sent, but Authorization and Cookie only say "<present>"
    status: int = 0
    bytes_sent: int = 0  # file body bytes written to the connection
    file_path: str | None = None
    request_id: str | None = None  # the id we answered with on an error
    client_disconnected: bool = False  # the client went away before the whole body was sent
    done: bool = False  # the server finished with the request (sent all, or saw the client leave)

    @property
    def credential(self) -> bool:
        return self.cookie_credential or self.bearer_credential


@dataclass
class _Commit:
    id: str
    created_at: int
    files: dict[str, bytes]
    #: for each file, the commit that last changed it (what the listing's Revision says)
    last_change: dict[str, tuple[str, int]]


@dataclass
class _Model:
    owner: str
    name: str
    branches: dict[str, _Commit]
    tags: dict[str, _Commit]
    token: str | None  # a private model's token; None: public

    def resolve(self, revision: str) -> _Commit | None:
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        for commit in itertools.chain(self.branches.values(), self.tags.values()):
            if commit.id == revision:
                return commit
        return None


@dataclass
class _Failure:
    status: int
    times: int
    path_contains: str | None
    downloads_only: bool = False


class ModelScopeServer(BackgroundAiohttpServer):
    """The ModelScope API on a loopback port; ``.endpoint`` is what MODELSCOPE_ENDPOINT takes."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], _Model] = {}
        self._log: list[MsRequest] = []
        self._failures: list[_Failure] = []
        self._clock = itertools.count(FIRST_COMMIT_TIME, 60)
        #: answer ranged downloads with the whole file and 200, as a server without Range support
        self.ignore_range = False
        #: at most this many file bytes a second per download (None: as fast as it goes)
        self.bytes_per_sec: int | None = None
        #: most entries one file list returns; the real service cuts longer lists silently
        #: (modelscope-hub: REPO_FILES_TRUNCATION_LIMIT)
        self.listing_cap = LISTING_CAP
        #: applied to every file list before it is sent (to serve hostile or odd entries)
        self.listing_hook: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports[0]}"

    # ------------------------------------------------------------ models
    def add_model(
        self,
        owner: str,
        name: str,
        files: Mapping[str, bytes],
        *,
        revisions: Mapping[str, Mapping[str, bytes]] | None = None,
        tags: Iterable[str] = (),
        token: str | None = None,
    ) -> dict[str, str]:
        """Add a model whose ``master`` holds ``files``; returns revision -> commit id.

        ``revisions`` adds more branches (or tags, for the names in ``tags``),
        committed before ``master`` in the order given, each a commit after the
        previous one. A file keeps the commit that introduced its content, so
        a file unchanged since an earlier revision names that revision's
        commit. ``token`` makes the model private.
        """
        tag_names = set(tags)
        ordered = [*(revisions or {}).items(), (DEFAULT_REVISION, files)]
        model = _Model(owner, name, {}, {}, token)
        introduced: dict[tuple[str, bytes], tuple[str, int]] = {}
        ids: dict[str, str] = {}
        for revision, content in ordered:
            created = next(self._clock)
            snapshot = {path: bytes(data) for path, data in content.items()}
            commit_id = hashlib.sha1(
                repr((owner, name, revision, created, sorted(snapshot.items()))).encode()
            ).hexdigest()
            for path, data in snapshot.items():
                introduced.setdefault((path, data), (commit_id, created))
            last_change = {path: introduced[(path, data)] for path, data in snapshot.items()}
            commit = _Commit(commit_id, created, snapshot, last_change)
            (model.tags if revision in tag_names else model.branches)[revision] = commit
            ids[revision] = commit_id
        with self._lock:
            self._models[(owner, name)] = model
        return ids

    def fail(
        self, status: int = 500, *, times: int = 1, path_contains: str | None = None,
        downloads_only: bool = False,
    ) -> None:
        """Answer the next ``times`` requests (path containing ``path_contains``; file
        downloads only, if asked) with ``status``."""
        with self._lock:
            self._failures.append(_Failure(status, times, path_contains, downloads_only))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    # ------------------------------------------------------------ log
    @property
    def log(self) -> list[MsRequest]:
        with self._lock:
            return [replace(r) for r in self._log]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def bytes_sent(self, file_path: str | None = None) -> int:
        """File body bytes sent, for one repo path or in total."""
        with self._lock:
            return sum(
                r.bytes_sent for r in self._log if file_path is None or r.file_path == file_path
            )

    def downloads(self) -> list[MsRequest]:
        return [r for r in self.log if r.path.endswith("/repo") and r.file_path is not None]

    # ------------------------------------------------------------ app
    def build_app(self) -> web.Application:
        app = web.Application()
        base = f"/api/v1/models/{{owner:{_SEGMENT}}}/{{name:{_SEGMENT}}}"
        app.router.add_get(base, self._info)
        app.router.add_get(base + "/revisions", self._revisions)
        app.router.add_get(base + "/repo/files", self._files)
        app.router.add_get(base + "/repo", self._download)
        app.router.add_get("/api/v1/repos/internalAccelerationInfo", self._acceleration_info)
        app.router.add_route("*", "/{tail:.*}", self._unknown_route)
        return app

    def _record(self, request: web.Request) -> MsRequest:
        rec = MsRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            range=request.headers.get("Range"),
            cookie_credential="m_session_id" in request.cookies,
            bearer_credential="Authorization" in request.headers,
            headers={
                k: "<present>" if k.lower() in _SECRET_HEADERS else v
                for k, v in request.headers.items()
            },
        )
        with self._lock:
            self._log.append(rec)
        return rec

    def _error(self, rec: MsRequest, status: int, message: str) -> web.Response:
        request_id = uuid.uuid4().hex
        rec.status, rec.request_id = status, request_id
        body = {
            "Code": status,
            "Success": False,
            "Message": message,
            "Data": None,
            "RequestId": request_id,
        }
        return web.json_response(body, status=status, headers={"X-Request-ID": request_id})

    def _ok(self, rec: MsRequest, data: Any) -> web.Response:
        rec.status = 200
        body = {
            "Code": 200,
            "Success": True,
            "Message": "success",
            "Data": data,
            "RequestId": uuid.uuid4().hex,
        }
        return web.json_response(body)

    def _injected_failure(self, rec: MsRequest) -> web.Response | None:
        with self._lock:
            for failure in self._failures:
                if failure.downloads_only and not rec.path.endswith("/repo"):
                    continue
                if failure.path_contains is None or failure.path_contains in rec.path:
                    failure.times -= 1
                    if failure.times <= 0:
                        self._failures.remove(failure)
                    break
            else:
                return None
        return self._error(rec, failure.status, "Internal server error, please retry later")

    def _model_for(self, request: web.Request, rec: MsRequest) -> _Model | web.Response:
        failure = self._injected_failure(rec)
        if failure is not None:
            return failure
        owner, name = request.match_info["owner"], request.match_info["name"]
        with self._lock:
            model = self._models.get((owner, name))
        if model is None:
            return self._error(rec, 404, f"Model {owner}/{name} does not exist")
        if model.token is not None:
            offered = _credentials(request)
            if not offered:
                return self._error(rec, 401, "User not logged in, please log in to access")
            if model.token not in offered:
                return self._error(rec, 403, f"No permission to access model {owner}/{name}")
        return model

    def _commit_for(
        self, model: _Model, rec: MsRequest
    ) -> tuple[str, _Commit] | web.Response:
        revision = rec.query.get("Revision") or DEFAULT_REVISION
        commit = model.resolve(revision)
        if commit is None:
            return self._error(
                rec, 404, f"Revision {revision} of model {model.owner}/{model.name} does not exist"
            )
        return revision, commit

    # ------------------------------------------------------------ handlers
    async def _info(self, request: web.Request) -> web.Response:
        rec = self._record(request)
        model = self._model_for(request, rec)
        if isinstance(model, web.Response):
            return model
        found = self._commit_for(model, rec)
        if isinstance(found, web.Response):
            return found
        revision, commit = found
        return self._ok(
            rec,
            {
                "Name": model.name,
                "Path": model.owner,
                "Revision": revision,
                "Private": model.token is not None,
                "CreatedTime": FIRST_COMMIT_TIME,
                "LastUpdatedTime": commit.created_at,
                "StorageSize": sum(len(d) for d in commit.files.values()),
            },
        )

    async def _revisions(self, request: web.Request) -> web.Response:
        rec = self._record(request)
        model = self._model_for(request, rec)
        if isinstance(model, web.Response):
            return model
        end_time = rec.query.get("EndTime")
        limit = int(end_time) if end_time and end_time.isdigit() else None

        def entries(refs: dict[str, _Commit]) -> list[dict[str, Any]]:
            rows = [
                {"Revision": name, "CreatedAt": c.created_at, "CommitId": c.id}
                for name, c in refs.items()
                if limit is None or c.created_at <= limit
            ]
            return sorted(rows, key=lambda row: row["CreatedAt"], reverse=True)

        return self._ok(
            rec, {"RevisionMap": {"Branches": entries(model.branches), "Tags": entries(model.tags)}}
        )

    async def _files(self, request: web.Request) -> web.Response:
        rec = self._record(request)
        model = self._model_for(request, rec)
        if isinstance(model, web.Response):
            return model
        found = self._commit_for(model, rec)
        if isinstance(found, web.Response):
            return found
        _, commit = found
        recursive = rec.query.get("Recursive", "False") == "True"
        root = rec.query.get("Root", "").strip("/")
        entries = _listing(commit, root, recursive)[: self.listing_cap]
        if self.listing_hook is not None:
            entries = self.listing_hook(entries)
        return self._ok(rec, {"Files": entries})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        rec = self._record(request)
        rec.file_path = rec.query.get("FilePath")
        model = self._model_for(request, rec)
        if isinstance(model, web.Response):
            return model
        found = self._commit_for(model, rec)
        if isinstance(found, web.Response):
            return found
        _, commit = found
        data = commit.files.get(rec.file_path or "")
        if data is None:
            return self._error(rec, 404, f"File {rec.file_path} does not exist")
        start, end, status = 0, len(data), 200
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if rec.range and not self.ignore_range:
            match = _RANGE.fullmatch(rec.range.strip())
            if match and (match.group(1) or match.group(2)):
                if match.group(1):
                    start = int(match.group(1))
                    end = min(int(match.group(2)) + 1, len(data)) if match.group(2) else len(data)
                else:  # a suffix range: the last N bytes
                    start = max(0, len(data) - int(match.group(2)))
                if start >= len(data) or start >= end:
                    rec.status = 416
                    return web.Response(
                        status=416, headers={"Content-Range": f"bytes */{len(data)}"}
                    )
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        rec.status = status
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start
        try:
            await response.prepare(request)
            step = 64 * 1024
            loop = asyncio.get_running_loop()
            began = loop.time()
            for offset in range(start, end, step):
                chunk = data[offset : min(offset + step, end)]
                await response.write(chunk)
                with self._lock:
                    rec.bytes_sent += len(chunk)
                if self.bytes_per_sec:
                    ahead = rec.bytes_sent / self.bytes_per_sec - (loop.time() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if transport_gone(request):
                    rec.client_disconnected = True
                    return response
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            rec.client_disconnected = True
            raise
        finally:
            rec.done = True
        return response

    async def _acceleration_info(self, request: web.Request) -> web.Response:
        rec = self._record(request)
        return self._ok(rec, {"InternalRegionQueryAddress": ""})

    async def _unknown_route(self, request: web.Request) -> web.Response:
        rec = self._record(request)
        return self._error(rec, 404, f"No such API: {request.method} {request.path}")


def _credentials(request: web.Request) -> set[str]:
    offered = set()
    cookie = request.cookies.get("m_session_id")
    if cookie:
        offered.add(cookie)
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and auth[7:].strip():
        offered.add(auth[7:].strip())
    return offered


def _listing(commit: _Commit, root: str, recursive: bool) -> list[dict[str, Any]]:
    """The file-list entries under ``root``: blobs and the folders (trees) between them."""
    prefix = f"{root}/" if root else ""
    blobs = sorted(p for p in commit.files if p.startswith(prefix))
    trees: set[str] = set()
    for path in blobs:
        parts = path.split("/")[:-1]
        trees.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    trees = {t for t in trees if t.startswith(prefix)}
    depth = prefix.count("/")
    entries: list[dict[str, Any]] = []
    for tree in sorted(trees):
        if recursive or tree.count("/") == depth:
            entries.append(_entry(tree, "tree", b"", (commit.id, commit.created_at)))
    for path in blobs:
        if recursive or path.count("/") == depth:
            entries.append(_entry(path, "blob", commit.files[path], commit.last_change[path]))
    return entries


def _entry(path: str, kind: str, data: bytes, change: tuple[str, int]) -> dict[str, Any]:
    is_blob = kind == "blob"
    return {
        "Name": path.rsplit("/", 1)[-1],
        "Path": path,
        "Type": kind,
        "Size": len(data),
        "Sha256": hashlib.sha256(data).hexdigest() if is_blob else "",
        "Revision": change[0],
        "CommittedDate": change[1],
        "CommitMessage": "upload",
        "CommitterName": "modelpull-tests",
        "IsLFS": is_blob and len(data) > 1024,
        "InCheck": False,
        "Mode": "33188" if is_blob else "16384",
    }


__all__ = ["DEFAULT_REVISION", "ModelScopeServer", "MsRequest"]
