"""A real OCI registry for the tests, and a front that can misbehave in front of it.

* :class:`DockerRegistry` runs Debian's ``docker-registry`` (CNCF Distribution)
  on a loopback port, optionally as a pull-through cache of another registry,
  and reads its access log. :meth:`DockerRegistry.push` uploads an Ollama-style
  model through the OCI API (docs PROTOCOLS.md section 3).
* :class:`RegistryFront` is an aiohttp reverse proxy in front of a registry
  that can demand bearer tokens from its own token realm, redirect blob
  downloads to another host (a "CDN", which records the headers it gets),
  corrupt chosen blobs, throttle each connection and count the blob bytes it
  sends. Pushes go through it too: it counts the upload bytes it hands the
  registry, can hold each upload request's body until it is whole before
  passing it on (as nginx does by default, ``proxy_request_buffering on``),
  and can refuse chosen push requests (401, 403, 413, a quota).

Nothing here talks to anything but 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from . import free_port

DOCKER_REGISTRY = "/usr/bin/docker-registry"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
OLLAMA_MODEL = "application/vnd.ollama.image.model"
OLLAMA_TEMPLATE = "application/vnd.ollama.image.template"
OLLAMA_PARAMS = "application/vnd.ollama.image.params"

_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<bytes>\d+)')
_model_numbers = itertools.count(1)
_BLOB_PATH = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Access:
    """One line of a registry's access log."""

    method: str
    path: str
    status: int
    bytes: int


@dataclass
class PushedModel:
    """What :meth:`DockerRegistry.push` uploaded."""

    repo: str
    tag: str
    manifest: bytes
    blobs: dict[str, bytes]  # digest -> content (config and layers)
    layer_digests: list[str]
    config_digest: str

    @property
    def total_size(self) -> int:
        return sum(len(b) for b in self.blobs.values())


def _http(method: str, url: str, data: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


class DockerRegistry:
    """``docker-registry serve`` on 127.0.0.1, with its storage and log under ``workdir``."""

    def __init__(self, workdir: Path, remote: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.remote = remote
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "registry.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DockerRegistry:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            self.port = free_port()
            config = self.workdir / "config.yml"
            lines = [
                "version: 0.1",
                "log: {level: warn, formatter: text, accesslog: {disabled: false}}",
                f"storage: {{filesystem: {{rootdirectory: {self.workdir / 'data'}}}, delete: {{enabled: true}}}}",
                f"http: {{addr: 127.0.0.1:{self.port}, secret: modelpull-tests}}",
            ]
            if self.remote:
                lines.append(f"proxy: {{remoteurl: {self.remote}}}")
            config.write_text("\n".join(lines) + "\n")
            env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [DOCKER_REGISTRY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=env,
                )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"docker-registry did not start; see {self.log_path}")

    def _wait_ready(self, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                if _http("GET", f"{self.url}/v2/")[0] == 200:
                    return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> DockerRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the access log ----------------------------------------------------
    def access_log(self) -> list[Access]:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [
            Access(m["method"], m["path"], int(m["status"]), int(m["bytes"]))
            for m in _ACCESS.finditer(text)
        ]

    def blob_gets(self, digest: str | None = None, repo: str | None = None) -> list[Access]:
        """Successful blob GETs (optionally of one digest, in one repository), in log order."""
        found = []
        for entry in self.access_log():
            match = _BLOB_PATH.match(entry.path.split("?")[0])
            if (
                entry.method == "GET" and match and entry.status in (200, 206)
                and (digest is None or match["digest"] == digest)
                and (repo is None or match["repo"] == repo)
            ):
                found.append(entry)
        return found

    def has_blob_locally(self, digest: str) -> bool:
        hexa = digest.split(":", 1)[1]
        data = self.workdir / "data" / "docker/registry/v2/blobs/sha256" / hexa[:2] / hexa / "data"
        return data.is_file()

    # -- pushing -----------------------------------------------------------
    def push(
        self,
        repo: str,
        tag: str,
        layers: list[tuple[str, bytes]],
        config: bytes | None = None,
    ) -> PushedModel:
        """Upload an Ollama-style model: blobs, then the manifest."""
        if config is None:
            config = json.dumps(
                {"model_format": "gguf", "model_family": "llama", "model_type": repo,
                 "file_type": "Q4_0", "rootfs": {"type": "layers", "diff_ids": []}}
            ).encode()
        blobs: dict[str, bytes] = {}
        config_digest = self.push_blob(repo, config)
        blobs[config_digest] = config
        descriptors = []
        for media_type, content in layers:
            digest = self.push_blob(repo, content)
            blobs[digest] = content
            descriptors.append({"mediaType": media_type, "digest": digest, "size": len(content)})
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_V2,
                "config": {"mediaType": CONFIG_V1, "digest": config_digest, "size": len(config)},
                "layers": descriptors,
            }
        ).encode()
        status, _, _ = _http(
            "PUT", f"{self.url}/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": MANIFEST_V2}
        )
        assert status == 201, status
        return PushedModel(repo, tag, manifest, blobs, [d["digest"] for d in descriptors], config_digest)

    def push_tiny(self, weights: int = 300_000, tag: str = "1b", repo: str | None = None) -> PushedModel:
        """Push a small model with a fresh name: random 'weights', a template, params, a config."""
        repo = repo or f"library/tiny{next(_model_numbers)}"
        return self.push(
            repo,
            tag,
            [
                (OLLAMA_MODEL, os.urandom(weights)),
                (OLLAMA_TEMPLATE, b"{{ .System }} {{ .Prompt }}"),
                (OLLAMA_PARAMS, b'{"stop": ["<|end|>"], "temperature": 0.7}'),
            ],
        )

    def push_blob(self, repo: str, content: bytes) -> str:
        digest = sha256_digest(content)
        _, headers, _ = _http("POST", f"{self.url}/v2/{repo}/blobs/uploads/")
        location = headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        status, _, _ = _http(
            "PUT", f"{location}{sep}digest={digest}", content, {"Content-Type": "application/octet-stream"}
        )
        assert status == 201, status
        return digest


# --------------------------------------------------------------------------- front


@dataclass
class Seen:
    """A request the front (or the CDN) received."""

    method: str
    path: str
    headers: dict[str, str]
    port: int


@dataclass
class RegistryFront:
    """A reverse proxy in front of a registry that can ask for tokens, redirect, corrupt, throttle.

    Runs its own event loop in a thread, on ``host`` (any 127.x address).
    Settings may be changed between requests from the test thread.
    """

    upstream: str
    host: str = "127.0.0.1"
    #: demand ``Authorization: Bearer`` from our own realm on /v2/ requests
    token_auth: bool = False
    #: what the realm requires as ``Basic`` credentials ("user:password"); None = anyone
    credential: str | None = None
    #: demand ``Authorization: Basic <credential>`` on /v2/ requests instead of tokens
    basic_auth: bool = False
    #: seconds a token from our realm stays valid (announced as ``expires_in``)
    token_lifetime: float = 300.0
    #: realm URL to announce instead of our own ``/token`` (to test foreign realms)
    realm: str | None = None
    #: send blob GETs to this other front with a 307
    redirect_blobs_to: RegistryFront | None = None
    #: bytes per second per connection for blob bodies (None: as fast as possible)
    rate: float | None = None
    #: digests whose bodies get one byte flipped
    corrupt: set[str] = field(default_factory=set)
    #: path -> (content type, body) served instead of the upstream's answer
    overrides: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    #: path -> extra headers sent with an override
    override_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    #: read an upload request's whole body before passing it on (a cut one never reaches the registry)
    buffer_uploads: bool = False
    #: (method, path regex, status, JSON body): answered instead of passing a matching request on
    refuse: list[tuple[str, str, int, dict[str, object]]] = field(default_factory=list)

    seen: list[Seen] = field(default_factory=list, init=False)
    token_requests: list[dict[str, str]] = field(default_factory=list, init=False)
    served: Counter[str] = field(default_factory=Counter, init=False)
    #: upload body bytes handed to the registry, by method (PATCH, PUT, POST)
    uploaded: Counter[str] = field(default_factory=Counter, init=False)
    #: most blob responses streaming at the same time
    max_concurrent_blobs: int = field(default=0, init=False)
    port: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._tokens: dict[str, float] = {}  # token -> when it expires
        self._streaming = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> RegistryFront:
        self._thread = threading.Thread(target=self._main, name="registry-front", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("registry front did not start")
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.run_until_complete(self._astart())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._astop())
            loop.close()

    async def _astart(self) -> None:
        app = web.Application(client_max_size=1 << 40)  # held upload bodies may be large
        app.router.add_route("GET", "/token", self._token)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(auto_decompress=False, trust_env=False)

    async def _astop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> RegistryFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def blob_requests(self) -> list[Seen]:
        return [s for s in self.seen if _BLOB_PATH.match(s.path)]

    # -- handlers ----------------------------------------------------------
    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.token_requests.append({**request.headers, "query": request.query_string})
        if self.credential is not None:
            expected = "Basic " + base64.b64encode(self.credential.encode()).decode()
            if request.headers.get("Authorization") != expected:
                return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401)
        token = secrets.token_hex(16)
        self._tokens[token] = time.monotonic() + self.token_lifetime
        return web.json_response({"token": token, "expires_in": self.token_lifetime})

    def _challenge(self, request: web.Request) -> web.StreamResponse:
        match = re.match(r"^/v2/(.+)/(?:manifests|blobs)/", request.path)
        scope = f'scope="repository:{match.group(1)}:pull",' if match else ""
        realm = self.realm or f"{self.url}/token"
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            status=401,
            headers={"WWW-Authenticate": f'Bearer realm="{realm}",{scope}service="front"'},
        )

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, dict(request.headers), self.port))
        if self.token_auth and request.path.startswith("/v2/"):
            sent = request.headers.get("Authorization", "")
            if not sent.startswith("Bearer ") or self._tokens.get(sent[7:], 0) < time.monotonic():
                return self._challenge(request)
        if self.basic_auth and request.path.startswith("/v2/"):
            expected = "Basic " + base64.b64encode((self.credential or "").encode()).decode()
            if request.headers.get("Authorization") != expected:
                return web.json_response(
                    {"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                    headers={"WWW-Authenticate": 'Basic realm="front"'},
                )
        if request.path in self.overrides:
            kind, body = self.overrides[request.path]
            extra = self.override_headers.get(request.path, {})
            return web.Response(body=body, headers={"Content-Type": kind, **extra})
        for method, pattern, status, error in self.refuse:
            if request.method == method and re.search(pattern, request.path_qs):
                if request.can_read_body:
                    await request.read()
                return web.json_response(error, status=status)
        blob = _BLOB_PATH.match(request.path)
        if blob and self.redirect_blobs_to is not None and request.method == "GET":
            raise web.HTTPTemporaryRedirect(self.redirect_blobs_to.url + request.path_qs)
        headers = {k: v for k, v in request.headers.items()
                   if k in ("Range", "Content-Type", "Content-Range", "Content-Length")}
        if "Accept" in request.headers:  # skopeo sends one Accept header per media type
            headers["Accept"] = ", ".join(request.headers.getall("Accept"))
        body = None
        if request.method in ("PATCH", "PUT", "POST") and request.can_read_body:
            body = await request.read() if self.buffer_uploads else self._count_upload(request)
            if self.buffer_uploads:
                self.uploaded[request.method] += len(body)
        assert self._session is not None
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, allow_redirects=False, data=body,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key in ("Content-Type", "Content-Length", "Content-Range", "Docker-Content-Digest",
                        "Accept-Ranges", "Location", "ETag", "Range", "Docker-Upload-UUID"):
                if key in upstream.headers:
                    response.headers[key] = upstream.headers[key]
            if response.headers.get("Location", "").startswith(self.upstream):
                response.headers["Location"] = self.url + response.headers["Location"][len(self.upstream):]
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            digest = blob["digest"] if blob else None
            offset = _range_start(upstream.headers.get("Content-Range"))
            started = time.monotonic()
            sent = 0
            self._streaming += 1
            self.max_concurrent_blobs = max(self.max_concurrent_blobs, self._streaming if digest else 0)
            try:
                async for chunk in upstream.content.iter_chunked(64 * 1024):
                    if digest in self.corrupt:
                        chunk = _flip_first_byte_at_or_after(chunk, offset, 0)
                    await response.write(chunk)
                    offset += len(chunk)
                    sent += len(chunk)
                    if digest:
                        self.served[digest] += len(chunk)
                        rate = self.rate
                        if rate:
                            ahead = sent / rate - (time.monotonic() - started)
                            if ahead > 0:
                                await asyncio.sleep(ahead)
            finally:
                self._streaming -= 1
            await response.write_eof()
            return response


    async def _count_upload(self, request: web.Request):  # type: ignore[no-untyped-def]
        async for chunk in request.content.iter_any():
            self.uploaded[request.method] += len(chunk)
            yield chunk


def _range_start(content_range: str | None) -> int:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else 0


def _flip_first_byte_at_or_after(chunk: bytes, offset: int, target: int) -> bytes:
    """Flip the byte at absolute ``target`` if this chunk (starting at ``offset``) holds it."""
    if offset <= target < offset + len(chunk):
        i = target - offset
        return chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
    return chunk
