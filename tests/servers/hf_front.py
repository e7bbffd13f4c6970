"""A Hub-like HTTP front for olah that can be told to misbehave.

``HfFront`` is an aiohttp server (own event loop, background thread) that
reverse-proxies to a running olah (see :mod:`tests.servers.olah`). Tests point
huggingface_hub / modelpull at ``front.endpoint`` and steer it with plain
thread-safe methods.

Hub compatibility (on by default, ``set_hub_compat(False)`` for raw olah):
olah lacks several things the Hub does (see ``olah.OLAH_GAPS``). In compat
mode the front answers like huggingface.co:

* ``/api/models/{repo}`` without revision is served as ``.../revision/main``;
  ``?blobs=true`` fills every sibling's ``size``, ``blobId`` and
  ``lfs {sha256,size,pointerSize}`` from olah's tree listing.
* unknown revision -> 404 ``RevisionNotFound``; missing file (or a directory)
  -> 404 ``EntryNotFound``; unknown repo -> 401 ``RepoNotFound`` (as olah).
* ``HEAD/GET /{repo}/resolve/{rev}/{path}``: ``ETag`` quoted (sha256 of the
  content for LFS files, git blob id otherwise), ``X-Repo-Commit``,
  ``Content-Length``, ``Accept-Ranges: bytes``, and for LFS files
  ``X-Linked-Size`` / ``X-Linked-Etag``. ``Range: bytes=a-b`` / ``a-`` /
  ``-n`` gives 206 with ``Content-Range`` (olah itself ignores Range, so the
  front slices olah's full stream); unsatisfiable -> 416.
* optional ``redirect_lfs()``: like the Hub, resolve of an LFS file answers
  302 to a second "CDN" port (``cdn_endpoint``), a different origin, so tests
  can check that no ``Authorization`` header follows the redirect.

Every request is logged (:class:`RequestRecord`); the token itself is never
stored, only whether an ``Authorization`` header was present.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import aiohttp
from aiohttp import web

from . import LOOPBACK, BackgroundAiohttpServer, sleep_watching, transport_gone

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",
    "host",
    "date",
    "server",
}
_SHA40 = re.compile(r"^[0-9a-f]{40}$")
CHUNK = 64 * 1024


@dataclass
class RequestRecord:
    """One request seen by the front (or its CDN port)."""

    id: int
    server: str  # "front" or "cdn"
    method: str
    path: str  # URL path as the client sent it (percent-decoded)
    query: str
    range: str | None  # the Range header, verbatim
    auth_present: bool  # an Authorization header was sent (its value is never kept)
    repo_id: str | None = None
    revision: str | None = None
    file_path: str | None = None  # for resolve / cdn requests
    status: int | None = None
    error_code: str | None = None  # X-Error-Code we answered with
    bytes_sent: int = 0  # body bytes handed to the client connection
    content_length: int | None = None  # body length we announced
    client_disconnected: bool = False  # the client went away before the body was complete
    cut: bool = False  # we cut the connection on purpose (cut_after rule)
    stalled: float = 0.0  # seconds we stalled on purpose
    rule: str | None = None  # which rule shaped/answered this request
    started: float = 0.0  # time.monotonic()
    finished: float | None = None

    @property
    def done(self) -> bool:
        return self.finished is not None


@dataclass
class _Rule:
    id: int
    kind: str
    repo_id: str | None = None
    path: str | None = None  # fnmatch pattern on the file path in the repo
    times: int | None = None  # None = always
    params: dict[str, Any] = field(default_factory=dict)

    def matches(self, repo_id: str | None, file_path: str | None) -> bool:
        if self.repo_id is not None and self.repo_id != repo_id:
            return False
        return self.path is None or (
            file_path is not None and fnmatch.fnmatchcase(file_path, self.path)
        )


@dataclass
class _FileMeta:
    repo_id: str
    commit: str
    path: str
    size: int
    blob_id: str
    lfs_sha256: str | None

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or self.blob_id


class _HubError(Exception):
    def __init__(self, response: web.StreamResponse, code: str | None, rule: str | None = None):
        super().__init__(code)
        self.response = response
        self.code = code
        self.rule = rule


def hub_error(
    status: int,
    code: str | None,
    message: str,
    *,
    head: bool = False,
    extra_headers: dict[str, str] | None = None,
) -> web.Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    if extra_headers:
        headers.update(extra_headers)
    body = None if head else json.dumps({"error": message}).encode()
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


class HfFront(BackgroundAiohttpServer):
    """Reverse proxy to olah with Hub behaviour and fault injection.

    ``endpoint`` / ``cdn_endpoint``: base URLs. All rule methods may be called
    from any thread at any time; they apply to requests that start afterwards
    (transfer rules: to bodies that reach the rule's byte offset afterwards).
    """

    def __init__(
        self,
        upstream: str,
        *,
        hub_compat: bool = True,
        lfs_store: Callable[[str], Path] | None = None,
    ) -> None:
        """``upstream``: olah's endpoint. ``lfs_store``: ``repo_id -> repo folder``
        (``OlahServer.repo_path``), needed only by :meth:`serve_lfs_from_disk`."""
        super().__init__(n_sites=2)
        self.upstream = upstream.rstrip("/")
        self._lfs_store = lfs_store
        self._lfs_from_disk = False
        self._lock = threading.RLock()
        self._rules: list[_Rule] = []
        self._rule_ids = itertools.count(1)
        self._req_ids = itertools.count(1)
        self._log: list[RequestRecord] = []
        self._bytes_by_path: dict[str, int] = {}
        self._hub_compat = hub_compat
        self._redirect_lfs = False
        self._tree_cache: dict[tuple[str, str], dict[str, dict]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._idle = threading.Condition(self._lock)
        self._inflight = 0

    # ------------------------------------------------------------------ setup
    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports[0]}"

    @property
    def cdn_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports[1]}"

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=64),
        )
        return app

    async def on_shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------- rule API
    def _add(
        self,
        kind: str,
        repo_id: str | None = None,
        path: str | None = None,
        times: int | None = None,
        **params: Any,
    ) -> int:
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None (always)")
        with self._lock:
            rule = _Rule(next(self._rule_ids), kind, repo_id, path, times, params)
            self._rules.append(rule)
            return rule.id

    def remove_rule(self, rule_id: int) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r.id != rule_id]

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()
            self._redirect_lfs = False

    def set_hub_compat(self, on: bool = True) -> None:
        """``False``: pass olah's answers through untouched (rules still apply)."""
        with self._lock:
            self._hub_compat = on

    def serve_lfs_from_disk(self, on: bool = True) -> None:
        """Speed-up: read LFS file bodies from the mirror's LFS store (the very
        file olah would stream) instead of through olah, which ignores Range, so
        a ranged GET at offset X costs X bytes of olah streaming. Headers,
        metadata and errors still come from olah; client-visible behaviour is
        the same. Off by default."""
        if on and self._lfs_store is None:
            raise RuntimeError("HfFront was built without lfs_store")
        with self._lock:
            self._lfs_from_disk = on

    def redirect_lfs(self, on: bool = True) -> None:
        """Resolve of an LFS file answers 302 to ``cdn_endpoint`` (as the Hub does)."""
        with self._lock:
            self._redirect_lfs = on

    def require_token(self, token: str, repo_id: str | None = None) -> int:
        """Private repo(s): no Authorization -> 401 RepoNotFound; another bearer
        token -> 401 "Invalid credentials in Authorization header"."""
        return self._add("token", repo_id, token=token)

    def gate(
        self,
        repo_id: str,
        *,
        status: int | None = None,
        api: bool = True,
        allowed_tokens: Iterable[str] = (),
    ) -> int:
        """Gated repo: 401 (anonymous) / 403 (with a token) + ``X-Error-Code: GatedRepo``.

        ``status`` forces 401 or 403. ``api=False``: ``/api/models/...`` stays
        readable (200, ``"gated": "manual"``), only file downloads are refused,
        which is what huggingface.co does; ``api=True`` refuses both.
        ``allowed_tokens``: bearer tokens that were granted access.
        """
        return self._add("gated", repo_id, status=status, api=api, allowed=set(allowed_tokens))

    def repo_not_found(self, repo_id: str) -> int:
        """401 ``RepoNotFound`` (what the Hub tells anonymous users; 404 with a token)."""
        return self._add("not_found", repo_id)

    def revision_not_found(self, repo_id: str, revision: str) -> int:
        return self._add("revision_not_found", repo_id, revision=revision)

    def entry_not_found(self, repo_id: str, path: str) -> int:
        """404 ``EntryNotFound`` for files matching ``path`` (fnmatch pattern)."""
        return self._add("entry_not_found", repo_id, path)

    def server_error(
        self,
        status: int = 500,
        *,
        repo_id: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
        times: int | None = None,
        on: str = "both",
        methods: Iterable[str] | None = None,
    ) -> int:
        """Answer ``status`` (500, 502, 503, 504, 429...) ``times`` times (None = always).

        ``on``: "api", "files" (resolve + CDN) or "both"; ``path`` limits it to
        matching files; ``retry_after`` adds a ``Retry-After`` header.
        """
        if on not in ("api", "files", "both"):
            raise ValueError("on must be 'api', 'files' or 'both'")
        return self._add(
            "error",
            repo_id,
            path,
            times,
            status=status,
            retry_after=retry_after,
            on=on,
            methods={m.upper() for m in methods} if methods else None,
        )

    def throttle(
        self, bytes_per_sec: float, *, repo_id: str | None = None, path: str | None = None
    ) -> int:
        """Send file bodies at most ``bytes_per_sec`` (per response)."""
        if bytes_per_sec <= 0:
            raise ValueError("bytes_per_sec must be > 0")
        return self._add("throttle", repo_id, path, None, rate=float(bytes_per_sec))

    def cut_after(
        self,
        nbytes: int,
        *,
        repo_id: str | None = None,
        path: str | None = None,
        times: int | None = 1,
    ) -> int:
        """Close the connection after ``nbytes`` bytes of a file response body
        (counted from the start of that response), ``times`` times (None = always)."""
        return self._add("cut", repo_id, path, times, after=int(nbytes))

    def stall(
        self,
        seconds: float,
        *,
        after_bytes: int = 0,
        repo_id: str | None = None,
        path: str | None = None,
        times: int | None = 1,
    ) -> int:
        """Send nothing for ``seconds`` once ``after_bytes`` bytes of a file body are out."""
        return self._add(
            "stall", repo_id, path, times, after=int(after_bytes), seconds=float(seconds)
        )

    # ------------------------------------------------------------- log API
    @property
    def log(self) -> list[RequestRecord]:
        with self._lock:
            return [replace(r) for r in self._log]

    def requests(
        self,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        server: str | None = None,
        file_path: str | None = None,
    ) -> list[RequestRecord]:
        out = []
        for r in self.log:
            if method and r.method != method.upper():
                continue
            if path_contains and path_contains not in r.path:
                continue
            if server and r.server != server:
                continue
            if file_path is not None and r.file_path != file_path:
                continue
            out.append(r)
        return out

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._bytes_by_path.clear()

    @property
    def bytes_sent_by_path(self) -> dict[str, int]:
        """Body bytes sent per URL path (front and CDN paths alike)."""
        with self._lock:
            return dict(self._bytes_by_path)

    def bytes_sent(self, path: str | None = None) -> int:
        """Body bytes sent for URL path ``path`` (exact), or in total."""
        with self._lock:
            if path is None:
                return sum(self._bytes_by_path.values())
            return self._bytes_by_path.get(path, 0)

    def file_bytes_sent(self, repo_id: str, file_path: str) -> int:
        """Body bytes of ``file_path`` in ``repo_id`` sent by resolve GETs and the CDN, all revisions."""
        with self._lock:
            return sum(
                r.bytes_sent
                for r in self._log
                if r.repo_id == repo_id and r.file_path == file_path and r.method == "GET"
            )

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is in flight (so the log is final)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._inflight, timeout)

    # ------------------------------------------------------------ internals
    def _snapshot(self):
        with self._lock:
            return list(self._rules), self._hub_compat, self._redirect_lfs

    def _consume(self, rule: _Rule) -> bool:
        """Use one of a rule's remaining times; False if it is used up."""
        with self._lock:
            if rule.times is None:
                return rule in self._rules
            if rule.times <= 0 or rule not in self._rules:
                return False
            rule.times -= 1
            if rule.times == 0:
                self._rules.remove(rule)
            return True

    def _count(self, rec: RequestRecord, n: int) -> None:
        with self._lock:
            rec.bytes_sent += n
            self._bytes_by_path[rec.path] = self._bytes_by_path.get(rec.path, 0) + n

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        server = "cdn" if sockname and sockname[1] == self.ports[1] else "front"
        raw = request.raw_path.split("?", 1)[0]
        rec = RequestRecord(
            id=next(self._req_ids),
            server=server,
            method=request.method,
            path=unquote(raw),
            query=request.query_string,
            range=request.headers.get("Range"),
            auth_present="Authorization" in request.headers,
            started=time.monotonic(),
        )
        with self._lock:
            self._log.append(rec)
            self._inflight += 1
        try:
            resp = await (self._cdn(request, rec) if server == "cdn" else self._front(request, rec))
            if rec.status is None:
                rec.status = resp.status
            if rec.error_code is None and resp.headers.get("X-Error-Code"):
                rec.error_code = resp.headers["X-Error-Code"]
            if not resp.prepared and isinstance(resp, web.Response) and resp.body is not None:
                self._count(rec, len(resp.body))  # small bodies: counted as handed over
            return resp
        except asyncio.CancelledError:
            rec.client_disconnected = rec.client_disconnected or not rec.cut
            raise
        finally:
            with self._idle:
                rec.finished = time.monotonic()
                self._inflight -= 1
                self._idle.notify_all()

    # ---- request parsing
    @staticmethod
    def _segments(request: web.Request) -> list[str]:
        raw = request.raw_path.split("?", 1)[0]
        return [unquote(s) for s in raw.split("/")[1:]]

    # ---- rules for a request
    def _check_access(
        self, request: web.Request, rec: RequestRecord, *, is_api: bool, rules: list[_Rule]
    ) -> web.Response | None:
        head = request.method == "HEAD"
        repo_id, file_path, revision = rec.repo_id, rec.file_path, rec.revision
        auth = request.headers.get("Authorization")
        bearer = auth[7:].strip() if auth and auth[:7].lower() == "bearer " else None
        for r in rules:
            if r.kind != "error" or not r.matches(repo_id, file_path if not is_api else None):
                continue
            if r.path is not None and is_api:
                continue
            if r.params["on"] == ("files" if is_api else "api"):
                continue
            if r.params["methods"] and request.method not in r.params["methods"]:
                continue
            if not self._consume(r):
                continue
            st = r.params["status"]
            extra = {}
            if r.params["retry_after"] is not None:
                ra = r.params["retry_after"]
                extra["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            rec.rule = f"error:{r.id}"
            text = {
                500: "Internal Error",
                502: "Bad Gateway",
                503: "Service Unavailable",
                504: "Gateway Timeout",
                429: "Too Many Requests",
            }.get(st, "Error")
            return web.Response(status=st, text=None if head else text, headers=extra)
        if repo_id is None:
            return None
        for r in rules:
            if r.kind == "token" and r.matches(repo_id, None):
                if auth is None:
                    rec.rule = f"token:{r.id}"
                    return hub_error(401, "RepoNotFound", "Repository not found", head=head)
                if bearer != r.params["token"]:
                    rec.rule = f"token:{r.id}"
                    return hub_error(
                        401, None, "Invalid credentials in Authorization header", head=head
                    )
        for r in rules:
            if r.kind == "not_found" and r.matches(repo_id, None):
                rec.rule = f"not_found:{r.id}"
                return hub_error(
                    404 if auth else 401, "RepoNotFound", "Repository not found", head=head
                )
        for r in rules:
            if r.kind == "gated" and r.matches(repo_id, None):
                if is_api and not r.params["api"]:
                    continue
                if bearer is not None and bearer in r.params["allowed"]:
                    continue
                st = r.params["status"] or (403 if auth else 401)
                rec.rule = f"gated:{r.id}"
                if st == 401:
                    msg = (
                        f"Access to model {repo_id} is restricted. You must have access to it and be "
                        "authenticated to access it. Please log in."
                    )
                else:
                    msg = (
                        f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                        f"Visit https://huggingface.co/{repo_id} to ask for access."
                    )
                return hub_error(st, "GatedRepo", msg, head=head)
        for r in rules:
            if (
                r.kind == "revision_not_found"
                and r.matches(repo_id, None)
                and revision == r.params["revision"]
            ):
                rec.rule = f"revision_not_found:{r.id}"
                return hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
        if file_path is not None:
            for r in rules:
                if r.kind == "entry_not_found" and r.matches(repo_id, file_path):
                    rec.rule = f"entry_not_found:{r.id}"
                    return hub_error(404, "EntryNotFound", "Entry not found", head=head)
        return None

    # ---- upstream helpers
    def _fwd_headers(self, request: web.Request, keep_range: bool = True) -> dict[str, str]:
        h = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if not keep_range:
            h.pop("Range", None)
        h["Accept-Encoding"] = "identity"
        return h

    def _fix_location(self, value: str) -> str:
        if value.startswith(self.upstream):
            return self.endpoint + value[len(self.upstream) :]
        return value

    async def _get_json(self, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        assert self._session is not None
        async with self._session.get(
            self.upstream + path, headers=headers, allow_redirects=False
        ) as r:
            body = await r.read()
            try:
                return r.status, json.loads(body) if body else None
            except ValueError:
                return r.status, None

    async def _resolve_commit(self, repo_id: str, revision: str, head: bool) -> str:
        """Commit sha of ``revision``, or raise _HubError like the Hub."""
        hdr = {"Accept-Encoding": "identity"}
        st, data = await self._get_json(
            f"/api/models/{repo_id}/revision/{quote(revision, safe='')}", hdr
        )
        if st == 200 and isinstance(data, dict) and data.get("sha"):
            return data["sha"]
        st2, _ = await self._get_json(f"/api/models/{repo_id}/refs", hdr)
        if st2 == 200:
            raise _HubError(
                hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head),
                "RevisionNotFound",
            )
        raise _HubError(
            hub_error(401, "RepoNotFound", "Repository not found", head=head), "RepoNotFound"
        )

    async def _tree(self, repo_id: str, commit: str) -> dict[str, dict]:
        key = (repo_id, commit)
        with self._lock:
            cached = self._tree_cache.get(key)
        if cached is not None:
            return cached
        st, data = await self._get_json(
            f"/api/models/{repo_id}/tree/{commit}/?recursive=true", {"Accept-Encoding": "identity"}
        )
        if st != 200 or not isinstance(data, list):
            raise _HubError(
                web.Response(status=502, text=f"olah tree listing failed with {st}"), None
            )
        tree = {e["path"]: e for e in data if isinstance(e, dict) and "path" in e}
        with self._lock:
            self._tree_cache[key] = tree
        return tree

    async def _file_meta(self, repo_id: str, revision: str, path: str, head: bool) -> _FileMeta:
        commit = revision if _SHA40.match(revision) else None
        if commit is None:
            commit = await self._resolve_commit(repo_id, revision, head)
        try:
            tree = await self._tree(repo_id, commit)
        except _HubError:
            if _SHA40.match(revision):
                await self._resolve_commit(repo_id, revision, head)  # raises the Hub error
            raise
        e = tree.get(path)
        if e is None or e.get("type") != "file":
            raise _HubError(
                hub_error(404, "EntryNotFound", "Entry not found", head=head), "EntryNotFound"
            )
        lfs = e.get("lfs") or None
        return _FileMeta(
            repo_id, commit, path, int(e["size"]), e["oid"], lfs["oid"] if lfs else None
        )

    # ---- front: everything the Hub answers
    async def _front(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        rules, compat, redirect = self._snapshot()
        seg = self._segments(request)
        head = request.method == "HEAD"
        # /api/models/{org}/{name}[/...]
        if len(seg) >= 4 and seg[0] == "api" and seg[1] == "models":
            rec.repo_id = f"{seg[2]}/{seg[3]}"
            rest = seg[4:]
            if len(rest) >= 2 and rest[0] in ("revision", "tree", "commits", "paths-info"):
                rec.revision = rest[1]
            err = self._check_access(request, rec, is_api=True, rules=rules)
            if err is not None:
                return err
            return await self._api(request, rec, rest, compat, rules)
        # /{org}/{name}/resolve/{rev}/{path...}
        if len(seg) >= 5 and seg[2] == "resolve" and request.method in ("GET", "HEAD"):
            rec.repo_id = f"{seg[0]}/{seg[1]}"
            rec.revision = seg[3]
            rec.file_path = "/".join(seg[4:])
            err = self._check_access(request, rec, is_api=False, rules=rules)
            if err is not None:
                return err
            if not compat:
                return await self._proxy_stream(request, rec, rules)
            try:
                meta = await self._file_meta(rec.repo_id, rec.revision, rec.file_path, head)
            except _HubError as e:
                rec.error_code = e.code
                return e.response
            if redirect and meta.lfs_sha256:
                return self._redirect(request, rec, meta)
            return await self._serve_file(request, rec, meta, rules, cdn=False)
        err = self._check_access(request, rec, is_api=True, rules=rules)
        if err is not None:
            return err
        return await self._proxy_small(request, rec, request.raw_path)

    async def _api(
        self,
        request: web.Request,
        rec: RequestRecord,
        rest: list[str],
        compat: bool,
        rules: list[_Rule],
    ) -> web.StreamResponse:
        head = request.method == "HEAD"
        repo_id = rec.repo_id
        assert repo_id is not None
        qs = ("?" + request.query_string) if request.query_string else ""
        if not compat:
            return await self._proxy_small(request, rec, request.raw_path)
        is_info = not rest or (len(rest) == 2 and rest[0] == "revision")
        if is_info:
            revision = rest[1] if rest else "main"
            try:
                commit = await self._resolve_commit(repo_id, revision, head)
            except _HubError as e:
                rec.error_code = e.code
                return e.response
            path = f"/api/models/{repo_id}/revision/{quote(revision, safe='')}"
            status, headers, body = await self._upstream_small(request, path + qs)
            if status == 200 and body and request.method == "GET":
                try:
                    data = json.loads(body)
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    q = parse_qs(request.query_string)
                    if _truthy(q.get("blobs")):
                        tree = await self._tree(repo_id, commit)
                        sibs = []
                        for s in data.get("siblings") or []:
                            e = tree.get(s.get("rfilename"))
                            if e:
                                s = dict(s, blobId=e["oid"], size=e["size"])
                                if e.get("lfs"):
                                    s["lfs"] = {
                                        "sha256": e["lfs"]["oid"],
                                        "size": e["lfs"]["size"],
                                        "pointerSize": e["lfs"]["pointerSize"],
                                    }
                            sibs.append(s)
                        data["siblings"] = sibs
                        data["usedStorage"] = sum(
                            int(e.get("size", 0)) for e in tree.values() if e.get("type") == "file"
                        )
                    for r in rules:
                        if r.kind == "gated" and r.matches(repo_id, None):
                            data["gated"] = "manual"
                    body = json.dumps(data).encode()
            return self._small_response(status, headers, body, head)
        if rest and rest[0] == "tree" and len(rest) >= 2:
            revision = rest[1]
            sub = "/".join(quote(p) for p in rest[2:])
            path = f"/api/models/{repo_id}/tree/{quote(revision, safe='')}/{sub}"
            status, headers, body = await self._upstream_small(request, path + qs)
            if status in (401, 404):
                try:
                    await self._resolve_commit(repo_id, revision, head)
                except _HubError as e:
                    rec.error_code = e.code
                    return e.response
                if rest[2:]:
                    return hub_error(
                        404,
                        "EntryNotFound",
                        f'{"/".join(rest[2:])} does not exist on "{revision}"',
                        head=head,
                    )
            return self._small_response(status, headers, body, head)
        return await self._proxy_small(request, rec, request.raw_path)

    def _small_response(
        self, status: int, headers: dict[str, str], body: bytes, head: bool
    ) -> web.Response:
        h = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
        if "Location" in h:
            h["Location"] = self._fix_location(h["Location"])
        return web.Response(status=status, body=None if head else body, headers=h)

    async def _upstream_small(
        self, request: web.Request, path_qs: str
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        data = await request.read() if request.body_exists else None
        async with self._session.request(
            request.method,
            self.upstream + path_qs,
            data=data,
            headers=self._fwd_headers(request),
            allow_redirects=False,
        ) as r:
            body = await r.read()
            return r.status, dict(r.headers), body

    async def _proxy_small(
        self, request: web.Request, rec: RequestRecord, path_qs: str
    ) -> web.Response:
        status, headers, body = await self._upstream_small(request, path_qs)
        return self._small_response(status, headers, body, request.method == "HEAD")

    def _redirect(self, request: web.Request, rec: RequestRecord, meta: _FileMeta) -> web.Response:
        loc = (
            f"{self.cdn_endpoint}/cdn/{meta.repo_id}/{meta.commit}/{quote(meta.path)}"
            f"?Expires={int(time.time()) + 3600}&Signature=modelpull-test&Key-Pair-Id=TEST"
        )
        headers = {
            "Location": loc,
            "X-Repo-Commit": meta.commit,
            "X-Linked-Size": str(meta.size),
            "X-Linked-Etag": f'"{meta.etag}"',
            "Accept-Ranges": "bytes",
        }
        rec.rule = "redirect_lfs"
        text = None if request.method == "HEAD" else f"Found. Redirecting to {loc}"
        return web.Response(status=302, text=text, headers=headers)

    # ---- the CDN port
    async def _cdn(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        rules, _, _ = self._snapshot()
        seg = self._segments(request)
        head = request.method == "HEAD"
        if (
            len(seg) < 5
            or seg[0] != "cdn"
            or not _SHA40.match(seg[3])
            or request.method not in ("GET", "HEAD")
        ):
            return web.Response(status=404, text=None if head else "Not Found")
        rec.repo_id = f"{seg[1]}/{seg[2]}"
        rec.revision = seg[3]
        rec.file_path = "/".join(seg[4:])
        for r in rules:  # only plain server errors apply to the CDN
            if (
                r.kind == "error"
                and r.params["on"] != "api"
                and r.matches(rec.repo_id, rec.file_path)
                and (not r.params["methods"] or request.method in r.params["methods"])
                and self._consume(r)
            ):
                rec.rule = f"error:{r.id}"
                extra = (
                    {"Retry-After": str(r.params["retry_after"])}
                    if r.params["retry_after"] is not None
                    else {}
                )
                return web.Response(
                    status=r.params["status"], text=None if head else "Error", headers=extra
                )
        try:
            meta = await self._file_meta(rec.repo_id, rec.revision, rec.file_path, head)
        except _HubError:
            return web.Response(status=404, text=None if head else "Not Found")
        return await self._serve_file(request, rec, meta, rules, cdn=True)

    # ---- file bodies
    async def _serve_file(
        self,
        request: web.Request,
        rec: RequestRecord,
        meta: _FileMeta,
        rules: list[_Rule],
        cdn: bool,
    ) -> web.StreamResponse:
        size = meta.size
        headers = {
            "ETag": f'"{meta.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if not cdn:
            headers["X-Repo-Commit"] = meta.commit
            if meta.lfs_sha256:
                headers["X-Linked-Size"] = str(size)
                headers["X-Linked-Etag"] = f'"{meta.lfs_sha256}"'
        rng = parse_range(request.headers.get("Range"), size)
        if rng == "unsatisfiable":
            headers["Content-Range"] = f"bytes */{size}"
            return web.Response(status=416, headers=headers)
        status = 200
        start, length = 0, size
        if rng is not None:
            start, end = rng
            length = end - start + 1
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        rec.status = status
        rec.content_length = length
        if request.method == "HEAD":
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        if self._lfs_from_disk and meta.lfs_sha256 and self._lfs_store is not None:
            h = meta.lfs_sha256
            obj = self._lfs_store(meta.repo_id) / ".git" / "lfs" / "objects" / h[:2] / h[2:4] / h
            if obj.is_file():
                await resp.prepare(request)
                return await _Shaper(self, request, rec, rules).pump(
                    resp, _file_chunks(obj, start, length)
                )
        assert self._session is not None
        url = f"{self.upstream}/{meta.repo_id}/resolve/{meta.commit}/{quote(meta.path)}"
        fwd = {"Accept-Encoding": "identity"}
        if rng is not None:
            fwd["Range"] = request.headers["Range"]  # passed through; olah ignores it
        async with self._session.get(url, headers=fwd, allow_redirects=False) as up:
            if up.status == 206:
                skip = 0  # upstream honoured the range itself
            elif up.status == 200:
                skip = start
            else:
                body = await up.read()
                rec.status = up.status
                return web.Response(status=502, text=f"olah answered {up.status}: {body[:200]!r}")
            await resp.prepare(request)
            shaper = _Shaper(self, request, rec, rules)

            async def chunks():
                nonlocal skip
                remaining = length
                async for chunk in up.content.iter_chunked(CHUNK):
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk = chunk[skip:]
                        skip = 0
                    if len(chunk) > remaining:
                        chunk = chunk[:remaining]
                    remaining -= len(chunk)
                    if chunk:
                        yield chunk
                    if remaining <= 0:
                        break

            return await shaper.pump(resp, chunks())

    async def _proxy_stream(
        self, request: web.Request, rec: RequestRecord, rules: list[_Rule]
    ) -> web.StreamResponse:
        """Raw pass-through of a resolve request (hub_compat off)."""
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.raw_path,
            headers=self._fwd_headers(request),
            allow_redirects=False,
        ) as up:
            h = {k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP}
            if "Location" in h:
                h["Location"] = self._fix_location(h["Location"])
            resp = web.StreamResponse(status=up.status, headers=h)
            if up.headers.get("Content-Length") is not None and "chunked" not in up.headers.get(
                "Transfer-Encoding", ""
            ):
                resp.content_length = int(up.headers["Content-Length"])
                rec.content_length = resp.content_length
            rec.status = up.status
            await resp.prepare(request)
            if request.method == "HEAD":
                await resp.write_eof()
                return resp
            shaper = _Shaper(self, request, rec, rules if up.status == 200 else [])
            return await shaper.pump(resp, up.content.iter_chunked(CHUNK))


class _Shaper:
    """Writes a body to the client applying throttle / cut / stall rules."""

    def __init__(
        self, front: HfFront, request: web.Request, rec: RequestRecord, rules: list[_Rule]
    ) -> None:
        self.front = front
        self.request = request
        self.rec = rec
        m = [r for r in rules if r.matches(rec.repo_id, rec.file_path)]
        self.rate = min((r.params["rate"] for r in m if r.kind == "throttle"), default=None)
        self.cuts = sorted((r for r in m if r.kind == "cut"), key=lambda r: r.params["after"])
        self.stalls = sorted((r for r in m if r.kind == "stall"), key=lambda r: r.params["after"])
        self.sent = 0
        self.t0 = 0.0

    def _next_event(self) -> int | None:
        offs = [
            r.params["after"] for r in self.cuts + self.stalls if r.params["after"] >= self.sent
        ]
        return min(offs) if offs else None

    async def _events_at(self, resp: web.StreamResponse) -> bool:
        """Fire rules whose offset is reached; True if the connection was cut."""
        for r in list(self.stalls):
            if r.params["after"] == self.sent:
                self.stalls.remove(r)
                if self.front._consume(r):
                    self.rec.rule = f"stall:{r.id}"
                    t = time.monotonic()
                    gone = await sleep_watching(
                        r.params["seconds"], lambda: transport_gone(self.request)
                    )
                    self.rec.stalled += time.monotonic() - t
                    self.t0 += time.monotonic() - t  # a stall does not earn throttle credit
                    if gone:
                        self.rec.client_disconnected = True
                        raise ConnectionResetError("client went away during stall")
        for r in list(self.cuts):
            if r.params["after"] == self.sent:
                self.cuts.remove(r)
                if self.front._consume(r):
                    self.rec.rule = f"cut:{r.id}"
                    self.rec.cut = True
                    tr = self.request.transport
                    if tr is not None:
                        tr.close()  # flushes what was written, then closes: the client sees a short body
                    return True
        return False

    async def pump(self, resp: web.StreamResponse, chunks) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        self.t0 = loop.time()
        piece_max = CHUNK if self.rate is None else max(1024, min(CHUNK, int(self.rate / 20)))
        try:
            if await self._events_at(resp):
                return resp
            async for chunk in chunks:
                view = memoryview(chunk)
                while len(view):
                    nxt = self._next_event()
                    n = min(len(view), piece_max)
                    if nxt is not None and nxt > self.sent:
                        n = min(n, nxt - self.sent)
                    piece = bytes(view[:n])
                    view = view[n:]
                    if self.rate is not None:
                        due = self.t0 + (self.sent + n) / self.rate
                        delay = due - loop.time()
                        gone = delay > 0 and await sleep_watching(
                            delay, lambda: transport_gone(self.request)
                        )
                        if gone:
                            self.rec.client_disconnected = True
                            return resp
                    await resp.write(piece)
                    self.sent += n
                    self.front._count(self.rec, n)
                    if await self._events_at(resp):
                        return resp
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            if not self.rec.cut:
                self.rec.client_disconnected = True
        except asyncio.CancelledError:
            if not self.rec.cut:
                self.rec.client_disconnected = True
            raise
        if (
            self.rec.content_length is not None
            and self.sent < self.rec.content_length
            and not self.rec.cut
        ):
            self.rec.client_disconnected = True
        return resp


async def _file_chunks(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with open(path, "rb") as f:  # noqa: ASYNC230 - reads go through the executor
        f.seek(start)
        remaining = length
        while remaining > 0:
            chunk = await loop.run_in_executor(None, f.read, min(CHUNK * 4, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


def parse_range(header: str | None, size: int):
    """``None`` (serve everything), ``(start, end)`` inclusive, or ``"unsatisfiable"``."""
    if not header:
        return None
    h = header.strip()
    if not h.lower().startswith("bytes="):
        return None
    spec = h[6:].strip()
    if "," in spec:
        return None  # multiple ranges: answer 200 with the whole body (allowed)
    m = re.fullmatch(r"(\d*)-(\d*)", spec)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    a, b = m.group(1), m.group(2)
    if a == "":
        n = int(b)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return (max(0, size - n), size - 1)
    start = int(a)
    end = int(b) if b else size - 1
    if b and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return (start, min(end, size - 1))
