"""The HTTP API: download jobs, their event streams, the inventory, the page.

Every API answer that is not a stream is JSON; every error is
``{"error_code": ..., "message": ...}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import html
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .._push import PUSH_FORMAT, PUSH_TO, check_job
from .._secrets import as_secret
from ..api import SOURCES, RateLimit, check_download, plan_download
from ..errors import ModelpullError
from ..inventory import delete_model, discard_partials, list_partials, scan_inventory
from ._config import PATH_OPTIONS, ServiceConfig
from ._jobs import Job, JobConflict, JobManager, JobRequest, TooManyJobs
from ._journal import Journal
from ._streams import NDJSON, SSE, feed_events, job_events

log = logging.getLogger("modelpull.service")

_BODY_FIELDS = ("provider", "model", "token", "base_url", "options")
_MAX_OPTIONS = 32
_SECRET_QUERY_NAMES = frozenset({"token", "api_key", "apikey", "access_token", "key", "hf_token"})
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_PAGE_ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _status_for(exc: ModelpullError) -> int:
    if exc.code == "not_found":
        return 404
    if exc.code in ("connection_failed", "server_error", "timeout"):
        return 502
    return 400


def _error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status, headers=headers)


class ServiceState:
    """Settings plus the job manager, created on the loop that serves requests."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._manager: JobManager | None = None
        #: the bandwidth cap shared by every job; ``PUT /settings`` changes its rate
        self.limit = RateLimit(config.max_speed)

    def manager(self) -> JobManager:
        loop = asyncio.get_running_loop()
        if self._manager is None or self._manager.loop is not loop:
            if self._manager is not None:
                self._manager.release_journal()  # its loop is gone; the new manager takes the jobs over
            data_dir = self.config.data_dir
            self._manager = JobManager(
                keep_finished=self.config.keep_finished, max_running=self.config.max_running,
                journal=Journal(data_dir) if data_dir is not None else None,
                limit=self.limit, place_settings=self.config.inventory_options(),
            )
        return self._manager

    async def close(self) -> None:
        if self._manager is not None:
            await self._manager.close()

    def end_streams(self) -> None:
        """The server is stopping: end every event stream now (see :meth:`JobManager.end_streams`)."""
        if self._manager is not None:
            self._manager.end_streams()


def _check_auth(request: Request, config: ServiceConfig) -> None:
    bad = _SECRET_QUERY_NAMES & {k.lower() for k in request.query_params}
    if bad:
        raise ApiError(
            400, "secret_in_url",
            "tokens and keys are never accepted in the URL (they end up in logs); send the API key "
            "as 'Authorization: Bearer <key>' and a model token in the JSON body",
        )
    if not config.api_key:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), config.api_key.encode()):
        raise ApiError(
            401, "unauthorized", "this service needs its API key: send 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )


Endpoint = Callable[..., Awaitable[Response]]


def _api(config: ServiceConfig) -> Callable[[Endpoint], Endpoint]:
    """Check the key, and turn errors into ``{"error_code", "message"}`` answers."""

    def decorate(fn: Endpoint) -> Endpoint:
        @functools.wraps(fn)
        async def endpoint(request: Request, *args: Any, **kwargs: Any) -> Response:
            try:
                _check_auth(request, config)
                return await fn(request, *args, **kwargs)
            except ApiError as exc:
                return _error_response(exc.status, exc.code, exc.message, exc.headers)
            except ModelpullError as exc:
                return _error_response(_status_for(exc), exc.code, exc.message)

        return endpoint

    return decorate


async def _read_json(request: Request, limit: int, empty: Any = None) -> Any:
    """The JSON body; an empty body is ``empty`` when that is not None (else invalid)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "unsupported_media_type", "send a JSON body with 'Content-Type: application/json'")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes")
    if empty is not None and not body.strip():
        return empty
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def parse_job_request(
    data: Any, config: ServiceConfig, check: Callable[..., str] = check_download
) -> JobRequest:
    """Validate a download request body (offline) and apply the service's defaults.

    ``check`` is the offline check of the request (a push job's differs).
    """
    if not isinstance(data, dict):
        raise _invalid("the body must be a JSON object with provider, model and optional token, base_url, options")
    unknown = sorted(set(data) - set(_BODY_FIELDS))
    if unknown:
        raise _invalid(f"unknown field(s) {', '.join(k[:40] for k in unknown)}; accepted: {', '.join(_BODY_FIELDS)}")
    provider, model = data.get("provider"), data.get("model")
    token, base_url, options = data.get("token"), data.get("base_url"), data.get("options")
    if not isinstance(provider, str) or not provider.strip():
        raise _invalid("'provider' is required: one of " + ", ".join(SOURCES.names()))
    if not isinstance(model, str) or not model.strip():
        raise _invalid("'model' is required, e.g. 'org/name' or 'gemma3:1b'")
    if len(model) > 400:
        raise _invalid("'model' is too long")
    if token is not None and (not isinstance(token, str) or len(token) > 4096):
        raise _invalid("'token' must be a string")
    if base_url is not None and (not isinstance(base_url, str) or len(base_url) > 2048):
        raise _invalid("'base_url' must be a string URL")
    if options is None:
        options = {}
    if not isinstance(options, dict) or len(options) > _MAX_OPTIONS:
        raise _invalid(f"'options' must be a JSON object of at most {_MAX_OPTIONS} entries")
    for key, value in options.items():
        if key == "token":
            raise _invalid("pass the token as the top-level 'token' field, not as an option")
        if not _plain_value(value):
            raise _invalid(f"option {key[:40]!r} must be a string, number, boolean or list of strings")
    chosen_paths = sorted(set(options) & PATH_OPTIONS)
    if chosen_paths and not config.allow_client_paths:
        raise ApiError(
            400, "invalid_option",
            f"this service chooses where models go; it does not accept {', '.join(chosen_paths)} "
            "(start it with --allow-client-paths to let clients choose folders)",
        )
    name = SOURCES.get(provider).name  # raises UnsupportedProvider
    default_base, default_options = config.provider_defaults(name, options)
    merged = {**default_options, **options}
    base_url = base_url or default_base
    model = model.strip()
    check(name, model, token, base_url, **merged)  # raises ModelpullError (offline)
    return JobRequest(name, model, base_url or None, merged, as_secret(token))


def parse_push_request(data: Any, config: ServiceConfig) -> JobRequest:
    """A push request body: a download's fields plus ``destination`` and ``format``; ``token`` is the
    destination's credential. It runs as a job beside the downloads (same events and controls)."""
    if not isinstance(data, dict):
        raise _invalid("the body must be a JSON object with provider, model, destination and optional "
                       "format, token, base_url, options")
    body = dict(data)
    destination, fmt = body.pop("destination", None), body.pop("format", "modelpack")
    if not isinstance(destination, str) or not destination.strip() or len(destination) > 2048:
        raise _invalid("'destination' is required: oci://registry[:port]/namespace/name[:tag] or oci-layout:PATH")
    if not isinstance(fmt, str):
        raise _invalid("'format' must be 'modelpack' or 'docker'")
    options: dict[str, Any] = body["options"] if isinstance(body.get("options"), dict) else {}
    if not config.allow_client_paths and (destination.startswith("oci-layout:") or "state_dir" in options):
        raise ApiError(400, "invalid_option", "this service chooses where files go; it does not push to an "
                       "oci-layout folder or take state_dir (start it with --allow-client-paths to allow that)")
    body["options"] = {**options, PUSH_TO: destination.strip(), PUSH_FORMAT: fmt}
    return parse_job_request(body, config, check=check_job)


def parse_resume_body(data: Any) -> str | None:
    """The token of a resume request (``{}`` or ``{"token": "..."}``), None when absent."""
    if not isinstance(data, dict):
        raise _invalid("the body must be a JSON object: {} or {\"token\": \"...\"}")
    unknown = sorted(set(data) - {"token"})
    if unknown:
        raise _invalid(f"unknown field(s) {', '.join(k[:40] for k in unknown)}; accepted: token")
    token = data.get("token")
    if token is not None and (not isinstance(token, str) or len(token) > 4096):
        raise _invalid("'token' must be a string")
    return token


def _plain_value(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return not isinstance(value, str) or len(value) <= 4096
    if isinstance(value, list) and len(value) <= 256:
        return all(isinstance(v, str) and len(v) <= 1024 for v in value)
    return False


def _same_local_model(request: JobRequest, provider: str, model: str) -> bool:
    """Does a download (``request``) write the local model ``provider``/``model``?"""
    asked, running = SOURCES.find(provider), SOURCES.find(request.provider)
    if asked is None or running is None:
        return False
    place = running.landing(request.options).place
    if asked.place is None or place is None:
        return False
    return asked.place.name == place.name and asked.place.same_model(request.model, model)


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes", "on")


def settings_view(state: ServiceState) -> dict[str, Any]:
    return {"max_speed": state.limit.rate}


def apply_settings(data: Any, state: ServiceState) -> None:
    """``{"max_speed": 20000000 | "20M" | null}``: the cap in bytes/s, null for none."""
    if not isinstance(data, dict) or not data or set(data) - {"max_speed"}:
        raise _invalid('the body must be {"max_speed": bytes per second, e.g. "20M" (20 MB/s), or null}')
    value = data["max_speed"]
    if isinstance(value, bool) or not (value is None or isinstance(value, (int, float, str))):
        raise _invalid('max_speed must be a number of bytes per second, a string such as "20M", or null')
    state.limit.rate = value  # an unreadable rate is invalid_option
    log.info("bandwidth cap set to %s", f"{state.limit.rate:.0f} bytes/s" if state.limit.rate else "none")


def _stream_format(request: Request) -> str:
    fmt = request.query_params.get("format", "").lower()
    if fmt in ("ndjson", "jsonl"):
        return NDJSON
    if fmt in ("sse", ""):
        if not fmt and NDJSON in request.headers.get("accept", ""):
            return NDJSON
        return SSE
    raise ApiError(400, "invalid_request", "format must be 'sse' or 'ndjson'")


def _after(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    if not raw.strip().isdigit() or len(raw) > 18:
        raise ApiError(400, "invalid_request", "Last-Event-ID / after must be an event number")
    return int(raw)


def _page(api_base: str) -> Response:
    text = resources.files(__package__).joinpath("static/index.html").read_text("utf-8")
    text = text.replace("{{API_BASE}}", html.escape(api_base.rstrip("/"), quote=True))
    return Response(text, media_type="text/html; charset=utf-8", headers=_page_headers())


def _page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": PAGE_CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _asset(name: str) -> Response:
    if name not in _PAGE_ASSETS:
        return _error_response(404, "not_found", "no such file")
    data = resources.files(__package__).joinpath(f"static/{name}").read_bytes()
    return Response(data, media_type=_PAGE_ASSETS[name], headers=_page_headers())


def page_response(api_base: str) -> Response:
    """The web page, talking to the API mounted at ``api_base``."""
    return _page(api_base)


def asset_response(name: str) -> Response:
    return _asset(name)


def create_router(
    config: ServiceConfig | None = None, state: ServiceState | None = None, page: bool = True
) -> APIRouter:
    """An APIRouter serving the whole API (and, with ``page``, the page under ``/ui``).

    Mount it with ``app.include_router(router, prefix="/api/models")``.
    """
    config = config or (state.config if state else ServiceConfig.from_env())
    state = state or ServiceState(config)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        state.manager()  # jobs from the journal are listed (and resumed) before the first request
        yield
        await state.close()

    router = APIRouter(lifespan=lifespan)
    router.modelpull_state = state  # type: ignore[attr-defined]
    api = _api(config)

    def find_job(job_id: str) -> Job:
        job = state.manager().get(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no download job {job_id[:40]!r} (finished jobs are kept for a while)")
        return job

    def start(request_data: Any) -> tuple[Job, bool]:
        job_request = parse_job_request(request_data, config)
        try:
            return state.manager().start(job_request)
        except TooManyJobs as exc:
            raise ApiError(429, "too_many_jobs", str(exc)) from None

    @router.get("/providers")
    @api
    async def providers(request: Request) -> Response:
        """Providers this service can download from, with their options."""
        items = []
        for source in SOURCES.by_rank():
            base_url, _ = config.provider_defaults(source.name)
            item = source.describe()
            if not config.allow_client_paths:
                item["options"] = [o for o in item["options"] if o["name"] not in PATH_OPTIONS]
            item["default_base_url"] = base_url
            items.append(item)
        return JSONResponse({"providers": items, "auth": bool(config.api_key)})

    @router.get("/settings")
    @api
    async def get_settings(request: Request) -> Response:
        """Settings that may change while the service runs: the bandwidth cap."""
        return JSONResponse(settings_view(state))

    @router.put("/settings")
    @api
    async def put_settings(request: Request) -> Response:
        """Change the bandwidth cap every job shares (running jobs follow at once)."""
        apply_settings(await _read_json(request, config.max_body), state)
        return JSONResponse(settings_view(state))

    @router.post("/plan")
    @api
    async def plan(request: Request) -> Response:
        """What a download with this body would fetch (``Plan.to_dict()``); nothing is downloaded."""
        job_request = parse_job_request(await _read_json(request, config.max_body), config)
        token = job_request.token.reveal() if job_request.token else None
        result = await plan_download(
            job_request.provider, job_request.model, token=token, base_url=job_request.base_url,
            **job_request.options,
        )
        del token
        return JSONResponse(result.to_dict())

    @router.post("/downloads")
    @api
    async def create_download(request: Request) -> Response:
        """Start a download, or join the identical one already running."""
        job, joined = start(await _read_json(request, config.max_body))
        location = request.url.path.rstrip("/") + "/" + job.id
        return JSONResponse(
            {"id": job.id, "joined": joined, "events": location + "/events", "job": job.view()},
            status_code=200 if joined else 201,
            headers={"Location": location},
        )

    @router.post("/pushes")
    @api
    async def create_push(request: Request) -> Response:
        """Start a push of a model to a registry or layout: a job beside the downloads, under /downloads/{id}."""
        job_request = parse_push_request(await _read_json(request, config.max_body), config)
        try:
            job, joined = state.manager().start(job_request)
        except TooManyJobs as exc:
            raise ApiError(429, "too_many_jobs", str(exc)) from None
        location = request.url.path.rstrip("/").removesuffix("/pushes") + "/downloads/" + job.id
        return JSONResponse(
            {"id": job.id, "joined": joined, "events": location + "/events", "job": job.view()},
            status_code=200 if joined else 201,
            headers={"Location": location},
        )

    @router.get("/downloads")
    @api
    async def list_downloads(request: Request) -> Response:
        return JSONResponse({"jobs": [job.view() for job in state.manager().jobs()]})

    @router.get("/downloads/{job_id}")
    @api
    async def get_download(request: Request, job_id: str) -> Response:
        return JSONResponse(find_job(job_id).view())

    @router.get("/downloads/{job_id}/events")
    @api
    async def download_events(request: Request, job_id: str) -> Response:
        """SSE (default) or NDJSON (``?format=ndjson``) of a job's events, with replay."""
        job = find_job(job_id)
        fmt, after = _stream_format(request), _after(request)
        if fmt == SSE and not job.running and after >= job.last_seq:
            return Response(status_code=204)  # tells EventSource to stop reconnecting
        return StreamingResponse(
            job_events(job, state.manager(), after, fmt), media_type=fmt, headers=_STREAM_HEADERS
        )

    @router.delete("/downloads/{job_id}")
    @api
    async def delete_download(request: Request, job_id: str) -> Response:
        """Cancel a running job (partial data is kept), or forget a paused or finished one."""
        job = find_job(job_id)
        if job.running:
            await job.cancel()
            return JSONResponse(job.view())
        state.manager().forget(job)
        return JSONResponse({"id": job.id, "removed": True})

    @router.post("/downloads/{job_id}/pause")
    @api
    async def pause_download(request: Request, job_id: str) -> Response:
        """Stop a running job's transfer like a cancel (partial data kept); state ``paused``."""
        # A JSON content type even without a body: a cross-site form cannot send one.
        if await _read_json(request, config.max_body, empty={}) != {}:
            raise _invalid("pause takes no fields: send {} or no body")
        job = find_job(job_id)
        try:
            await state.manager().pause(job)
        except JobConflict as exc:
            raise ApiError(409, exc.code, exc.message) from None
        return JSONResponse(job.view())

    @router.post("/downloads/{job_id}/resume")
    @api
    async def resume_download(request: Request, job_id: str) -> Response:
        """Run a paused, cancelled or failed job again under its id (``{"token"}`` when it needs one)."""
        token = parse_resume_body(await _read_json(request, config.max_body, empty={}))
        job = find_job(job_id)
        try:
            state.manager().resume(job, token)
        except JobConflict as exc:
            raise ApiError(409, exc.code, exc.message) from None
        except TooManyJobs as exc:
            raise ApiError(429, "too_many_jobs", str(exc)) from None
        return JSONResponse(job.view())

    @router.get("/events")
    @api
    async def all_events(request: Request) -> Response:
        """Every job's changes: first each job's state, then updates as they happen."""
        fmt = _stream_format(request)
        manager = state.manager()
        return StreamingResponse(feed_events(manager.feed(), manager, fmt), media_type=fmt, headers=_STREAM_HEADERS)

    @router.post("/pull")
    @api
    async def pull(request: Request) -> Response:
        """Start (or join) a download and stream its events as SSE right away."""
        job, _ = start(await _read_json(request, config.max_body))
        headers = {**_STREAM_HEADERS, "X-Download-Id": job.id}
        return StreamingResponse(job_events(job, state.manager(), 0, SSE), media_type=SSE, headers=headers)

    @router.get("/models")
    @api
    async def list_local_models(request: Request) -> Response:
        """Models on this machine (every source's place); ``?partial=true``: unfinished downloads."""
        provider = request.query_params.get("provider") or None
        if _flag(request, "partial"):
            partials = await asyncio.to_thread(list_partials, provider, **config.inventory_options())
            return JSONResponse({"partials": [p.to_dict() for p in partials]})
        inventory = await asyncio.to_thread(scan_inventory, provider, **config.inventory_options())
        return JSONResponse({"models": [m.to_dict() for m in inventory.models], "notes": inventory.notes})

    @router.delete("/models/{provider}/{model:path}")
    @api
    async def delete_local_model(request: Request, provider: str, model: str) -> Response:
        """Delete a local model, or with ``?partial=true`` its unfinished downloads (refused while
        a download of it runs)."""
        for job in state.manager().running():
            if _same_local_model(job.request, provider, model):
                raise ApiError(409, "download_running", f"{model} is being downloaded (job {job.id}); cancel it first")
        if _flag(request, "partial"):
            gone = await asyncio.to_thread(discard_partials, provider, model, **config.inventory_options())
            log.info("discarded %d partial file(s) of %s model %s", len(gone), provider, model)
            return JSONResponse({"provider": provider, "name": model, "discarded": [p.to_dict() for p in gone],
                                 "freed_bytes": sum(p.present_bytes for p in gone)})
        result = await asyncio.to_thread(delete_model, provider, model, **config.inventory_options())
        log.info("deleted %s model %s", provider, model)
        return JSONResponse(result)

    if not page:
        return router

    @router.get("/ui", include_in_schema=False)
    async def ui(request: Request) -> Response:
        return page_response(request.url.path[: -len("/ui")] or "/")

    @router.get("/ui/{name}", include_in_schema=False)
    async def ui_asset(name: str) -> Response:
        return asset_response(name)

    return router
