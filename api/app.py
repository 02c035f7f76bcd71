"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from api.body_limit import BodyLimitMiddleware
from api.console import mount_console
from api.errors import install_error_handlers
from api.job_waiter import JobWaiter
from api.nul_guard import NulGuardMiddleware
from api.request_log import RequestLogMiddleware
from api.routers import auth, health, jobs, metrics, models, root, usage, webhooks
from api.schemas import ErrorOut
from api.warm_up import warm_up
from shared.core.config import get_settings
from shared.core.logging_setup import configure_logging

PREFIX = "/api/v1"
# What any authenticated route may answer, documented once for all of them.
COMMON_ERRORS: dict[int | str, dict] = {
    401: {"model": ErrorOut, "description": "unauthorized: missing, unknown or revoked API key"},
    429: {"model": ErrorOut, "description": "rate_limited: see Retry-After"},
    503: {"model": ErrorOut, "description": "service_unavailable: database briefly down"},
}

DESCRIPTION = """Fit and predict with TabPFN over plain HTTP.

Register your TabPFN token once (`POST /api/v1/auth/setup`), then send
`Authorization: Bearer <api_key>` with every call. Jobs are queued and run by
workers; poll `GET /api/v1/jobs/{id}` and fetch `GET /api/v1/jobs/{id}/result`.
Every error is `{"detail": "...", "code": "stable_code"}`.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Before uvicorn binds: the process answers nothing until it is warm.
    await run_in_threadpool(warm_up)
    app.state.job_waiter = JobWaiter()
    await app.state.job_waiter.start()
    yield
    await app.state.job_waiter.stop()


def create_app() -> FastAPI:
    # /docs and /redoc serve Swagger UI's and ReDoc's files from this process: loaded
    # from a CDN, a script on this origin could read the console's API key (one tab
    # shares its sessionStorage with every page of the origin).
    app = FastAPIOffline(
        title="TabPFN API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=_lifespan,
        # Swagger UI would send the spec's URL to validator.swagger.io for a badge.
        swagger_ui_parameters={"validatorUrl": None},
    )
    install_error_handlers(app)
    settings = get_settings()
    app.add_middleware(NulGuardMiddleware)
    # Ours, not FastAPI's max_body_size: Starlette answers a declared oversize
    # body with plain text, outside the {"detail", "code"} contract.
    app.add_middleware(
        BodyLimitMiddleware,
        max_json_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    # Outermost: it times and logs every request, refused ones included.
    app.add_middleware(RequestLogMiddleware)
    for router in (auth.router, jobs.router, webhooks.router, models.router, usage.router):
        app.include_router(router, prefix=PREFIX, responses=COMMON_ERRORS)
    for router in (health.router, metrics.router):
        app.include_router(router, prefix=PREFIX)
    # Probes of orchestrators expect the bare paths too.
    app.include_router(health.router, include_in_schema=False)
    app.include_router(metrics.router, include_in_schema=False)
    app.include_router(root.router)
    mount_console(app)
    return app


def create_served_app() -> FastAPI:
    """The app in a process uvicorn started itself (API_PROCESSES > 1): logging first."""
    configure_logging()
    return create_app()
