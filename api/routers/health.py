"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from shared.core.schema_version import schema_problem
from shared.queue import get_celery

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="PostgreSQL (migrated to this release) and Redis are reachable")
def readyz() -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        # One round trip, as a bare ping was: the schema's revision.
        checks["database"] = schema_problem() or "ok"
    except Exception as exc:
        checks["database"] = f"unreachable ({type(exc).__name__})"
    try:
        with get_celery().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable ({type(exc).__name__})"
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    if not ready:
        body["code"] = "service_unavailable"
    return JSONResponse(body, status_code=200 if ready else 503)
