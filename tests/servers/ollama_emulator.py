"""An Ollama server emulator for ``/api/pull`` and friends.

No real Ollama can run here; this is the one emulator the project allows. It
follows docs PROTOCOLS.md section 1 line for line:

* ``POST /api/pull`` with ``{"model": ...}`` (or the older ``{"name": ...}``),
  ``"stream"`` true (default; ``application/x-ndjson``) or false (one final
  JSON object). Lines, in order::

      {"status":"pulling manifest"}
      {"status":"pulling <12hex>","digest":"sha256:<64hex>","total":N,"completed":k}   (many per layer)
      {"status":"verifying sha256 digest"}
      {"status":"writing manifest"}
      {"status":"removing unused layers"}      (only when a pulled model's layers were replaced)
      {"status":"success"}

  Layers are "downloaded" one after another at ``bytes_per_sec`` with a
  progress line every ``interval`` seconds (60 ms, like Ollama's ticker), the
  first line of a layer at once, and a last line with ``completed == total``.
* invalid name -> HTTP 400 ``{"error":"invalid model name"}`` before any line.
* unknown model -> 200, ``pulling manifest``, then
  ``{"error":"pull model manifest: file does not exist"}`` (``stream:false``:
  HTTP 500 with that error); ``set_unknown_model_mode("http500")`` answers 500
  before the stream instead.
* faults per model and layer: an error line after K bytes, the connection cut
  without ``success`` after K bytes, a stall of T seconds (progress lines keep
  coming with the same ``completed``, as Ollama's ticker does, or none at all
  with ``silent=True``).
* progress of a layer survives a cancelled pull (like Ollama's partial
  blobs): the next pull resumes at K; complete layers report
  ``completed == total`` at once. Blobs are shared between models by digest.
* the client closing the connection cancels the pull at once (the download
  of a layer stops when its last waiting client leaves); the emulator records
  when and at which byte counts, see :class:`PullRecord` and
  :meth:`OllamaEmulator.assert_no_progress_after_disconnect`.
* ``GET /api/tags``, ``DELETE /api/delete``, ``GET /api/version``, ``GET /``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as _dt
import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import LOOPBACK, BackgroundAiohttpServer

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
UNKNOWN_MODEL_ERROR = "pull model manifest: file does not exist"
INVALID_NAME_ERROR = "invalid model name"
MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_MEDIA_TYPES = (
    "application/vnd.ollama.image.model",
    "application/vnd.ollama.image.template",
    "application/vnd.ollama.image.params",
    "application/vnd.ollama.image.license",
    "application/vnd.ollama.image.system",
)

_HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
_NS_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_SECRETISH = re.compile(r"token|secret|password|passwd|auth|credential|api[_-]?key", re.IGNORECASE)


# --------------------------------------------------------------------- names
@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def key(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}".lower()

    @property
    def display(self) -> str:
        """Shortest form, as ``/api/tags`` shows it."""
        if self.host == DEFAULT_HOST and self.namespace == DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        if self.host == DEFAULT_HOST:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"


def parse_model_name(name: Any) -> ModelName | None:
    """``[host/][namespace/]model[:tag]`` per PROTOCOLS.md section 2, or None if invalid."""
    if not isinstance(name, str) or not name:
        return None
    s, tag = name, DEFAULT_TAG
    colon, slash = s.rfind(":"), s.rfind("/")
    if colon > slash:
        s, tag = s[:colon], s[colon + 1 :]
    parts = s.split("/")
    if len(parts) == 1:
        host, ns, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]
    elif len(parts) == 2:
        host, ns, model = DEFAULT_HOST, parts[0], parts[1]
    elif len(parts) == 3:
        host, ns, model = parts
    else:
        return None
    if not (1 <= len(host) <= 350 and _HOST_RE.match(host)):
        return None
    if not (1 <= len(ns) <= 80 and _NS_RE.match(ns)):
        return None
    for part in (model, tag):
        if not (1 <= len(part) <= 80 and _PART_RE.match(part)):
            return None
    return ModelName(host, ns, model, tag)


def go_time(t: _dt.datetime) -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed, as Go's time.Time marshals."""
    t = t.astimezone()
    frac = f"{t.microsecond:06d}000".rstrip("0")
    off = t.utcoffset() or _dt.timedelta(0)
    if off == _dt.timedelta(0):
        tz = "Z"
    else:
        mins = int(off.total_seconds() // 60)
        sign = "+" if mins >= 0 else "-"
        tz = f"{sign}{abs(mins) // 60:02d}:{abs(mins) % 60:02d}"
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + tz


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


# ---------------------------------------------------------------- model data
@dataclass(frozen=True)
class Layer:
    digest: str  # "sha256:<64 hex>"
    size: int
    media_type: str = LAYER_MEDIA_TYPES[0]

    @property
    def short(self) -> str:
        """The 12 hex characters after "pulling "."""
        return self.digest[7:19]


@dataclass
class EmuModel:
    name: ModelName
    layers: list[Layer]
    bytes_per_sec: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    pulled_layers: list[str] | None = None  # digests of the pulled version, None = not pulled
    modified_at: _dt.datetime | None = None

    @property
    def display_name(self) -> str:
        return self.name.display

    @property
    def total_size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def pulled(self) -> bool:
        return self.pulled_layers is not None

    def manifest(self) -> dict[str, Any]:
        cfg = json.dumps(
            {"model_format": "gguf", "model_family": self.details.get("family", "llama")}
        ).encode()
        return {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": "sha256:" + hashlib.sha256(cfg).hexdigest(),
                "size": len(cfg),
            },
            "layers": [
                {"mediaType": la.media_type, "digest": la.digest, "size": la.size}
                for la in self.layers
            ],
        }

    @property
    def manifest_digest(self) -> str:
        """Hex sha256 of the manifest JSON (what ``/api/tags`` shows as ``digest``)."""
        return hashlib.sha256(
            json.dumps(self.manifest(), separators=(",", ":")).encode()
        ).hexdigest()


@dataclass
class Fault:
    id: int
    kind: str  # "error" | "cut" | "stall"
    model_key: str
    layer: int
    after: int  # bytes into the layer
    times: int | None  # None = always
    message: str = ""
    seconds: float = 0.0
    silent: bool = False


@dataclass
class PullRecord:
    """One ``POST /api/pull`` as the emulator saw it."""

    id: int
    name: Any  # as the client sent it
    stream: bool
    started: float  # time.monotonic()
    model: str | None = None  # display name, when the name was valid
    http_status: int | None = None
    outcome: str | None = None  # success | error | cut | disconnected | invalid | unknown
    error: str | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)  # every object written
    ended: float | None = None
    disconnected_at: float | None = None  # time.monotonic() when the client went away
    completed_at_disconnect: dict[str, int] = field(default_factory=dict)  # digest -> bytes
    insecure: bool | None = None

    @property
    def statuses(self) -> list[str]:
        return [
            ln.get("status", "") if "status" in ln else "error: " + str(ln.get("error"))
            for ln in self.lines
        ]


@dataclass
class RequestRecord:
    method: str
    path: str
    body: Any  # parsed JSON with secret-looking fields replaced by "<redacted>"
    auth_present: bool
    time: float
    status: int | None = None


class _Download:
    def __init__(self, layer: Layer, model_key: str, layer_index: int, rate: float) -> None:
        self.layer = layer
        self.model_key = model_key
        self.layer_index = layer_index
        self.rate = rate
        self.refs = 0
        self.done = asyncio.Event()
        self.outcome: str | None = None  # ok | error | cut | cancelled
        self.error: str | None = None
        self.silent = False
        self.task: asyncio.Task | None = None


# ------------------------------------------------------------------ emulator
class OllamaEmulator(BackgroundAiohttpServer):
    """See the module docstring. All public methods are thread-safe."""

    def __init__(
        self,
        *,
        bytes_per_sec: float = 200 * 1024 * 1024,
        interval: float = 0.06,
        version: str = "0.12.3",
        unknown_model: str = "stream",
        step_delay: float = 0.01,
        include_zero_completed: bool = True,
    ) -> None:
        super().__init__(n_sites=1)
        self.bytes_per_sec = float(bytes_per_sec)
        self.interval = float(interval)
        self.version = version
        self.step_delay = step_delay
        #: Ollama marshals with ``omitempty``: a line with completed == 0 has
        #: no "completed" key at all. PROTOCOLS.md shows ``"completed":0``; set
        #: False to emit what Ollama really sends.
        self.include_zero_completed = include_zero_completed
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._models: dict[str, EmuModel] = {}
        self._faults: list[Fault] = []
        self._progress: dict[str, float] = {}  # digest -> bytes on "disk"
        self._downloads: dict[str, _Download] = {}
        self._pulls: list[PullRecord] = []
        self._requests: list[RequestRecord] = []
        self._ids = itertools.count(1)
        self._inflight = 0
        self.set_unknown_model_mode(unknown_model)

    # ------------------------------------------------------------ addresses
    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports[0]}"

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``, the form ``OLLAMA_HOST`` often takes."""
        return f"{LOOPBACK}:{self.ports[0]}"

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/pull", self._h_pull)
        app.router.add_get("/api/tags", self._h_tags)
        app.router.add_delete("/api/delete", self._h_delete)
        app.router.add_get("/api/version", self._h_version)
        app.router.add_route("GET", "/", self._h_root)
        app.router.add_route("*", "/{tail:.*}", self._h_404)
        return app

    async def on_shutdown(self) -> None:
        for dl in list(self._downloads.values()):
            if dl.task is not None:
                dl.task.cancel()

    # --------------------------------------------------------- configuration
    def set_unknown_model_mode(self, mode: str) -> None:
        """ "stream" (200 + error line, like Ollama) or "http500" (500 before the stream)."""
        if mode not in ("stream", "http500"):
            raise ValueError("mode must be 'stream' or 'http500'")
        with self._lock:
            self.unknown_model_mode = mode

    def add_model(
        self,
        name: str,
        layers: Sequence[int | tuple[str, int] | tuple[str, int, str]] | None = None,
        *,
        bytes_per_sec: float | None = None,
        pulled: bool = False,
        details: dict[str, Any] | None = None,
    ) -> EmuModel:
        """Make ``name`` pullable. ``layers``: sizes (digests are made up) or
        ``(digest, size[, media_type])``. Default: three layers (2 MB, 1.5 kB, 100 B).

        Adding a name that exists replaces its layers (a new version "upstream");
        if it was pulled, the next pull reports ``removing unused layers``.
        ``pulled=True``: already on "disk" (listed by /api/tags, layers complete).
        """
        n = parse_model_name(name)
        if n is None:
            raise ValueError(f"invalid model name {name!r}")
        if layers is None:
            layers = [2_000_000, 1_500, 100]
        out: list[Layer] = []
        for i, spec in enumerate(layers):
            mt = LAYER_MEDIA_TYPES[min(i, len(LAYER_MEDIA_TYPES) - 1)]
            if isinstance(spec, int):
                digest = (
                    "sha256:"
                    + hashlib.sha256(f"modelpull-emulator:{n.key}:{i}:{spec}".encode()).hexdigest()
                )
                out.append(Layer(digest, spec, mt))
            else:
                digest, size = spec[0], int(spec[1])
                if not _DIGEST_RE.match(digest):
                    raise ValueError(f"bad digest {digest!r}")
                out.append(Layer(digest, size, spec[2] if len(spec) > 2 else mt))
            if out[-1].size < 0:
                raise ValueError("negative layer size")
        det = {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "1B",
            "quantization_level": "Q4_K_M",
        }
        det.update(details or {})
        with self._lock:
            old = self._models.get(n.key)
            m = EmuModel(n, out, bytes_per_sec, det)
            if old is not None:
                m.pulled_layers, m.modified_at = old.pulled_layers, old.modified_at
            if pulled:
                m.pulled_layers = [la.digest for la in out]
                m.modified_at = _dt.datetime.now().astimezone()
                for la in out:
                    self._progress[la.digest] = la.size
            self._models[n.key] = m
            return copy.deepcopy(m)

    def model(self, name: str) -> EmuModel:
        n = parse_model_name(name)
        if n is None:
            raise KeyError(name)
        with self._lock:
            return copy.deepcopy(self._models[n.key])

    def remove_model(self, name: str) -> None:
        """Forget ``name`` entirely (the "registry" no longer has it)."""
        n = parse_model_name(name)
        with self._lock:
            if n is not None:
                self._models.pop(n.key, None)

    def is_pulled(self, name: str) -> bool:
        n = parse_model_name(name)
        with self._lock:
            m = self._models.get(n.key) if n else None
            return bool(m and m.pulled)

    def _fault(
        self, kind: str, name: str, layer: int, after: int, times: int | None, **kw: Any
    ) -> int:
        n = parse_model_name(name)
        if n is None:
            raise ValueError(f"invalid model name {name!r}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None (always)")
        with self._lock:
            f = Fault(next(self._ids), kind, n.key, layer, int(after), times, **kw)
            self._faults.append(f)
            return f.id

    def fail_after(
        self,
        name: str,
        after_bytes: int,
        *,
        layer: int = 0,
        error: str = "max retries exceeded: EOF",
        times: int | None = 1,
    ) -> int:
        """After ``after_bytes`` of layer ``layer``: a ``{"error": error}`` line, then the stream ends (HTTP 200)."""
        return self._fault("error", name, layer, after_bytes, times, message=error)

    def cut_after(
        self, name: str, after_bytes: int, *, layer: int = 0, times: int | None = 1
    ) -> int:
        """After ``after_bytes`` of layer ``layer``: close the connection, no ``success``, no error."""
        return self._fault("cut", name, layer, after_bytes, times)

    def stall(
        self,
        name: str,
        seconds: float,
        *,
        after_bytes: int = 0,
        layer: int = 0,
        times: int | None = 1,
        silent: bool = False,
    ) -> int:
        """Stop progress of layer ``layer`` at ``after_bytes`` for ``seconds``.
        Lines keep coming with the same ``completed`` (``silent=True``: no lines)."""
        return self._fault(
            "stall", name, layer, after_bytes, times, seconds=float(seconds), silent=silent
        )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_progress(self, digest: str, nbytes: int) -> None:
        """Pretend ``nbytes`` of blob ``digest`` are already on disk (a partial download)."""
        with self._lock:
            self._progress[digest] = float(nbytes)

    def progress(self, digest: str) -> int:
        """Bytes of blob ``digest`` "on disk" right now."""
        with self._lock:
            return int(self._progress.get(digest, 0))

    # ----------------------------------------------------------- inspection
    @property
    def pulls(self) -> list[PullRecord]:
        with self._lock:
            return copy.deepcopy(self._pulls)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return copy.deepcopy(self._requests)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled (records final)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._inflight, timeout)

    def wait_disconnect(self, timeout: float = 5.0) -> PullRecord:
        """Wait for a pull whose client went away; return its record."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for p in self._pulls:
                    if p.outcome == "disconnected" and p.ended is not None:
                        return copy.deepcopy(p)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no client disconnect seen")
                self._cond.wait(left)

    def assert_no_progress_after_disconnect(
        self, pull: PullRecord | None = None, settle: float = 0.3
    ) -> None:
        """Fail if any layer of a disconnected pull advanced after the disconnect.

        Waits ``settle`` seconds first so that a download still running would show.
        """
        if pull is None:
            pull = self.wait_disconnect()
        if pull.disconnected_at is None:
            raise AssertionError(f"pull {pull.id} was not disconnected (outcome {pull.outcome})")
        time.sleep(settle)
        moved = {
            d: (b, self.progress(d))
            for d, b in pull.completed_at_disconnect.items()
            if self.progress(d) != b
        }
        if moved:
            raise AssertionError(f"progress continued after the client disconnected: {moved}")

    # --------------------------------------------------------------- helpers
    def _record_request(self, request: web.Request, body: Any) -> RequestRecord:
        rec = RequestRecord(
            request.method,
            request.path,
            _redact(body),
            "Authorization" in request.headers,
            time.monotonic(),
        )
        with self._lock:
            self._requests.append(rec)
        return rec

    def _enter(self) -> None:
        with self._cond:
            self._inflight += 1

    def _leave(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    @staticmethod
    async def _json_body(request: web.Request) -> tuple[Any, str | None]:
        raw = await request.read()
        if not raw.strip():
            return None, "missing request body"
        try:
            return json.loads(raw), None
        except ValueError as exc:
            return None, str(exc)

    # -------------------------------------------------------------- handlers
    async def _h_root(self, request: web.Request) -> web.Response:
        self._record_request(request, None).status = 200
        return web.Response(text="Ollama is running")

    async def _h_404(self, request: web.Request) -> web.Response:
        self._record_request(request, None).status = 404
        return web.Response(status=404, text="404 page not found")

    async def _h_version(self, request: web.Request) -> web.Response:
        self._record_request(request, None).status = 200
        return _json_response({"version": self.version})

    async def _h_tags(self, request: web.Request) -> web.Response:
        self._record_request(request, None).status = 200
        with self._lock:
            ms = [m for m in self._models.values() if m.pulled]
            ms.sort(
                key=lambda m: m.modified_at or _dt.datetime.min.replace(tzinfo=_dt.timezone.utc),
                reverse=True,
            )
            out = []
            for m in ms:
                size = sum(la.size for la in m.layers if la.digest in set(m.pulled_layers or []))
                out.append(
                    {
                        "name": m.display_name,
                        "model": m.display_name,
                        "modified_at": go_time(m.modified_at or _dt.datetime.now()),
                        "size": size,
                        "digest": m.manifest_digest,
                        "details": dict(m.details),
                    }
                )
        return _json_response({"models": out})

    async def _h_delete(self, request: web.Request) -> web.Response:
        body, err = await self._json_body(request)
        rec = self._record_request(request, body)
        if err is not None or not isinstance(body, dict):
            rec.status = 400
            return _json_response({"error": err or "invalid request"}, status=400)
        given = body.get("model") or body.get("name")
        n = parse_model_name(given)
        if n is None:
            rec.status = 400
            return _json_response({"error": f"name {json.dumps(given)} is invalid"}, status=400)
        with self._lock:
            m = self._models.get(n.key)
            if m is None or not m.pulled:
                rec.status = 404
                return _json_response({"error": f"model '{given}' not found"}, status=404)
            old = set(m.pulled_layers or [])
            m.pulled_layers = None
            m.modified_at = None
            self._prune(old)
        rec.status = 200
        return web.Response(status=200)

    def _prune(self, digests: Iterable[str]) -> None:
        """Drop blobs no pulled model uses (caller holds the lock)."""
        used = set()
        for m in self._models.values():
            used.update(m.pulled_layers or [])
        for d in digests:
            if d not in used and d not in self._downloads:
                self._progress.pop(d, None)

    async def _h_pull(self, request: web.Request) -> web.StreamResponse:
        self._enter()
        try:
            return await self._pull(request)
        finally:
            self._leave()

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        body, err = await self._json_body(request)
        rec = self._record_request(request, body)
        given = body.get("model") or body.get("name") if isinstance(body, dict) else None
        stream = True
        if isinstance(body, dict) and body.get("stream") is not None:
            stream = bool(body.get("stream"))
        pr = PullRecord(next(self._ids), given, stream, time.monotonic())
        if isinstance(body, dict) and "insecure" in body:
            pr.insecure = bool(body["insecure"])
        with self._lock:
            self._pulls.append(pr)

        def finish(outcome: str, status: int, error: str | None = None) -> None:
            with self._cond:
                pr.outcome, pr.http_status, pr.ended = outcome, status, time.monotonic()
                if error is not None:
                    pr.error = error
                rec.status = status
                self._cond.notify_all()

        if err is not None or not isinstance(body, dict):
            finish("invalid", 400, err or "invalid request")
            return _json_response({"error": err or "invalid request"}, status=400)
        n = parse_model_name(given)
        if n is None:
            finish("invalid", 400, INVALID_NAME_ERROR)
            return _json_response({"error": INVALID_NAME_ERROR}, status=400)
        pr.model = n.display
        with self._lock:
            m = self._models.get(n.key)
            m = copy.deepcopy(m) if m is not None else None
            mode = self.unknown_model_mode
        if m is None and (mode == "http500" or not stream):
            finish("unknown", 500, UNKNOWN_MODEL_ERROR)
            return _json_response({"error": UNKNOWN_MODEL_ERROR}, status=500)

        resp: web.StreamResponse | None = None
        last: dict[str, Any] = {}

        async def emit(obj: dict[str, Any]) -> None:
            nonlocal resp, last
            with self._lock:
                pr.lines.append(dict(obj))
            last = obj
            if not stream:
                return
            if resp is None:
                resp = web.StreamResponse(
                    status=200, headers={"Content-Type": "application/x-ndjson"}
                )
                await resp.prepare(request)
            await resp.write(_line(obj))

        try:
            await emit({"status": "pulling manifest"})
            if m is None:
                await asyncio.sleep(self.step_delay)
                await emit({"error": UNKNOWN_MODEL_ERROR})
                finish("unknown", 200, UNKNOWN_MODEL_ERROR)
                return await _end(resp, request)
            await asyncio.sleep(self.step_delay)
            for idx, layer in enumerate(m.layers):
                result = await self._pull_layer(m, idx, layer, emit, pr)
                if result == "error":
                    err_msg = last.get("error")
                    if not stream:
                        finish("error", 500, err_msg)
                        return _json_response({"error": err_msg}, status=500)
                    finish("error", 200, err_msg)
                    return await _end(resp, request)
                if result == "cut":
                    finish("cut", 200 if stream else 0)
                    if request.transport is not None:
                        request.transport.close()
                    return resp if resp is not None else web.Response(status=200)
            await emit({"status": "verifying sha256 digest"})
            await asyncio.sleep(self.step_delay)
            await emit({"status": "writing manifest"})
            with self._lock:
                live = self._models.get(m.name.key)
                replaced = []
                if live is not None and live.pulled_layers is not None:
                    new = {la.digest for la in m.layers}
                    replaced = [d for d in live.pulled_layers if d not in new]
            if replaced:
                await emit({"status": "removing unused layers"})
            with self._lock:
                live = self._models.get(m.name.key)
                if live is not None:
                    live.pulled_layers = [la.digest for la in m.layers]
                    live.modified_at = _dt.datetime.now().astimezone()
                self._prune(replaced)
            await emit({"status": "success"})
            finish("success", 200)
            if not stream:
                return _json_response({"status": "success"})
            return await _end(resp, request)
        except (asyncio.CancelledError, ConnectionResetError, ConnectionError) as exc:
            if pr.outcome != "cut":
                if resp is not None and resp.prepared:
                    pr.http_status = 200
                self._note_disconnect(pr, m)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return resp if resp is not None else web.Response(status=499)

    def _note_disconnect(self, pr: PullRecord, m: EmuModel | None) -> None:
        with self._cond:
            if pr.disconnected_at is None:
                pr.disconnected_at = time.monotonic()
                if m is not None:
                    pr.completed_at_disconnect = {
                        la.digest: int(self._progress.get(la.digest, 0)) for la in m.layers
                    }
            pr.outcome = "disconnected"
            pr.ended = pr.ended or time.monotonic()
            self._cond.notify_all()

    async def _pull_layer(self, m: EmuModel, idx: int, layer: Layer, emit, pr: PullRecord) -> str:
        def line(done: int) -> dict[str, Any]:
            obj: dict[str, Any] = {"status": f"pulling {layer.short}", "digest": layer.digest}
            if layer.size or self.include_zero_completed:
                obj["total"] = layer.size
            if done or self.include_zero_completed:
                obj["completed"] = done
            return obj

        with self._lock:
            have = int(self._progress.get(layer.digest, 0))
        if have >= layer.size:
            await emit(line(layer.size))
            return "ok"
        with self._lock:
            dl = self._downloads.get(layer.digest)
            if dl is None:
                rate = m.bytes_per_sec or self.bytes_per_sec
                dl = _Download(layer, m.name.key, idx, rate)
                self._downloads[layer.digest] = dl
                dl.task = asyncio.get_running_loop().create_task(self._run_download(dl))
            dl.refs += 1
        try:
            await emit(line(self.progress(layer.digest)))
            waiter = asyncio.ensure_future(dl.done.wait())
            while not dl.done.is_set():
                try:
                    await asyncio.wait({waiter}, timeout=self.interval)
                except BaseException:
                    waiter.cancel()
                    raise
                if dl.done.is_set():
                    break
                if not dl.silent:
                    await emit(line(self.progress(layer.digest)))
            if dl.outcome == "ok":
                await emit(line(layer.size))
                return "ok"
            if dl.outcome == "error":
                await emit({"error": dl.error})
                return "error"
            if dl.outcome == "cut":
                return "cut"
            await emit({"error": "download cancelled"})
            return "error"
        finally:
            with self._lock:
                dl.refs -= 1
                last_one = dl.refs == 0 and not dl.done.is_set()
            if last_one and dl.task is not None:
                dl.task.cancel()

    async def _run_download(self, dl: _Download) -> None:
        loop = asyncio.get_running_loop()
        digest, total = dl.layer.digest, dl.layer.size
        last = loop.time()
        try:
            while True:
                with self._lock:
                    cur = self._progress.get(digest, 0.0)
                    faults = sorted(
                        (
                            f
                            for f in self._faults
                            if f.model_key == dl.model_key
                            and f.layer == dl.layer_index
                            and f.after >= int(cur)
                            and f.after <= total
                            and (f.times is None or f.times > 0)
                        ),
                        key=lambda f: f.after,
                    )
                fault = faults[0] if faults else None
                if cur >= total and (fault is None or fault.after < total):
                    dl.outcome = "ok"
                    break
                target = fault.after if fault is not None else total
                if int(cur) >= target and fault is not None:
                    with self._lock:
                        if fault.times is not None:
                            fault.times -= 1
                            if fault.times == 0:
                                self._faults.remove(fault)
                        self._progress[digest] = float(target)
                    if fault.kind == "error":
                        dl.outcome, dl.error = "error", fault.message
                        break
                    if fault.kind == "cut":
                        dl.outcome = "cut"
                        break
                    dl.silent = fault.silent
                    await asyncio.sleep(fault.seconds)
                    dl.silent = False
                    last = loop.time()
                    continue
                await asyncio.sleep(self.interval)
                now = loop.time()
                with self._lock:
                    cur = self._progress.get(digest, 0.0)
                    self._progress[digest] = min(float(target), cur + dl.rate * (now - last))
                last = now
        except asyncio.CancelledError:
            dl.outcome = "cancelled"
            raise
        finally:
            with self._lock:
                if self._downloads.get(digest) is dl:
                    del self._downloads[digest]
            dl.done.set()


async def _end(resp: web.StreamResponse | None, request: web.Request) -> web.StreamResponse:
    if resp is None:
        return web.Response(status=200)
    await resp.write_eof()
    return resp


def _json_response(data: Any, status: int = 200) -> web.Response:
    # compact separators, as Go's encoding/json writes
    return web.json_response(
        data, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":"))
    )


def _redact(body: Any) -> Any:
    if isinstance(body, dict):
        return {
            k: ("<redacted>" if _SECRETISH.search(str(k)) else _redact(v)) for k, v in body.items()
        }
    if isinstance(body, list):
        return [_redact(v) for v in body]
    return body
