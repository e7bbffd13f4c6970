"""The standalone service: the API under ``/api/models`` (and at the root), the page at ``/``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__
from ._config import ServiceConfig
from ._routes import ServiceState, create_router, page_response

API_PREFIX = "/api/models"

log = logging.getLogger("modelpull.service")


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    """The whole service as a FastAPI application (checks ``config`` first)."""
    config = config or ServiceConfig.from_env()
    config.check()
    state = ServiceState(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.manager()  # the journal's jobs: finished ones listed, running ones resumed
        yield
        await state.close()

    app = FastAPI(
        title="modelpull", version=__version__, lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    app.state.modelpull = state
    app.include_router(create_router(config, state), prefix=API_PREFIX)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return page_response(API_PREFIX)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/ui", include_in_schema=False)
    async def ui(request: Request) -> Response:
        return RedirectResponse("/")

    # The same API (same jobs) at the root too: ``POST /downloads`` works as the
    # issue and most clients write it; the page itself uses ``/api/models``.
    app.include_router(create_router(config, state, page=False))

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=config.trusted_hosts())
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["Location", "X-Download-Id"],
            max_age=600,
        )
    return app


def service_server(app: FastAPI, **uvicorn_options: Any) -> Any:
    """A uvicorn server for ``app`` that ends the event streams first when it stops.

    uvicorn waits for open connections before the app's shutdown, and a page's
    event stream never ends by itself: without this, every stop would wait the
    whole grace time and cut the streams mid-chunk.
    """
    import uvicorn

    class ServiceServer(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            app.state.modelpull.end_streams()
            await super().shutdown(sockets)

    return ServiceServer(uvicorn.Config(app, **uvicorn_options))


def run(config: ServiceConfig | None = None, log_level: str = "info", **uvicorn_options: Any) -> None:
    """Serve with uvicorn until interrupted (refuses unsafe settings first)."""
    config = config or ServiceConfig.from_env()
    app = create_app(config)
    _log_to_stderr(log_level)
    server = service_server(
        app,
        host=config.host.strip("[]"),
        port=config.port,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=3,
        **uvicorn_options,
    )
    server.run()


def _log_to_stderr(level: str) -> None:
    """Our own log lines (jobs started, finished, deleted) beside uvicorn's."""
    logger = logging.getLogger("modelpull")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
