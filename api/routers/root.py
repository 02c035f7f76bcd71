"""`GET /`: where to go from here, instead of a 404 on the first thing anyone tries."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

router = APIRouter(include_in_schema=False)

LINKS = {
    "docs": "/docs",
    "console": "/console",
    "api": "/api/v1",
    "openapi": "/openapi.json",
    "health": "/healthz",
}


@router.get("/")
def root(request: Request) -> Response:
    # A browser goes straight to the interactive docs; curl gets the map.
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/docs", status_code=307)
    return JSONResponse(
        {
            "name": "TabPFN API",
            "detail": "Interactive API docs are at /docs, the web console at /console; "
            "routes live under /api/v1 (start with POST /api/v1/auth/setup).",
            **LINKS,
        }
    )
