"""The model download service: an HTTP API with live progress, jobs, an inventory and a page.

    from fastapi import FastAPI
    import modelpull.service

    app = FastAPI()
    app.include_router(modelpull.service.router, prefix="/api/models")

or standalone: ``modelpull serve`` (http://127.0.0.1:8000). Needs the
``service`` extra: ``pip install 'modelpull[service]'``.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the modelpull service needs FastAPI and uvicorn: pip install 'modelpull[service]'"
    ) from exc

from ._app import API_PREFIX, create_app, run
from ._config import ConfigError, ServiceConfig
from ._jobs import Job, JobManager, JobRequest
from ._routes import create_router, parse_job_request

#: the API with default settings (``MODELPULL_API_KEY`` honoured), ready to mount
router = create_router()

__all__ = [
    "API_PREFIX",
    "ConfigError",
    "Job",
    "JobManager",
    "JobRequest",
    "ServiceConfig",
    "create_app",
    "create_router",
    "parse_job_request",
    "router",
    "run",
]
