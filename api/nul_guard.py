"""Refuse a NUL character (U+0000) in a request's path or query before any route reads it.

PostgreSQL's text cannot hold NUL: a path or query parameter with one
(`/auth/keys/%00`, `?status=%00`) reached a query and failed in the database
driver (a 500). No id, filter or option of this API can contain one, so it is
refused once here, for every route present and future: 422 validation_error.
Raw NUL bytes in the request line or a header never get this far (uvicorn
answers them with its own 400). Bodies are checked where their values are
read: column names and class labels (shared/tables/payloads.py, table_ingest.py)
and options (shared/jobs/submit.py).
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class NulGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        where = _nul_in(scope) if scope["type"] == "http" else None
        if where is None:
            await self.app(scope, receive, send)
            return
        refusal = JSONResponse(
            {
                "detail": f"The request's {where} holds a NUL character (%00, U+0000), "
                "which no path or parameter of this API contains.",
                "code": "validation_error",
            },
            status_code=422,
        )
        await refusal(scope, receive, send)


def _nul_in(scope: Scope) -> str | None:
    if "\x00" in scope["path"]:  # the server has decoded %00 already
        return "path"
    query = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:  # parsed only later, by the route
        return "query"
    return None
