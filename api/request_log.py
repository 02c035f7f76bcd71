"""One log line per HTTP request, and the request id that ties lines together.

A pure ASGI middleware: it sees the final status of every response, streamed
ones included, without buffering bodies. It logs the route's path template
(`/api/v1/jobs/{job_id}`), never headers, query strings or bodies, which may
carry credentials.

It also answers the 500 of an unhandled exception itself. Starlette's handler
for `Exception` runs outside every middleware, after this one has returned: its
response would go out without the X-Request-ID header and its traceback would
be logged without the request id (and logged again by uvicorn).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import internal_error
from shared.core.logging_setup import current_request_id

log = logging.getLogger("api.request")
errors_log = logging.getLogger("api.errors")

HEADER = "X-Request-ID"
# A client's id is kept only if it is a short token; anything else could be
# log injection or, sent by mistake, a credential.
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_SECRET_PREFIXES = ("tpa_", "whsec_")
# A key or secret pasted into a path (a mistyped route): its prefix stays, the rest not.
_SECRET_IN_PATH = re.compile(r"(tpa_|whsec_)[^/]*")
# Probes and scrapes arrive every few seconds; their lines are noise at INFO.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/api/v1/healthz",
                          "/api/v1/readyz", "/api/v1/metrics"})  # fmt: skip
_MAX_PATH = 200


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SANE_ID.fullmatch(candidate) and not candidate.startswith(_SECRET_PREFIXES):
                return candidate
            break
    return uuid.uuid4().hex


def _path(scope: Scope) -> str:
    """The matched route's template with its router prefix, else the path as sent.

    FastAPI's `scope["route"].path` may lack the prefix the router was included
    with; the prefix is the part of the concrete path before the route's segments.
    """
    path = scope["path"]
    template = getattr(scope.get("route"), "path", None)
    if not template or ":path}" in template:
        # Unmatched paths are whatever the client sent: keep them short, and
        # never write down an API key or webhook secret sent in one by mistake.
        return _SECRET_IN_PATH.sub(r"\1…", path)[:_MAX_PATH]
    depth = template.count("/")
    prefix = "/".join(path.split("/")[: path.count("/") - depth + 1])
    return prefix + template


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Logged here, once, while the request id is still the context's.
            errors_log.exception("unhandled error")
            if status is None:
                await internal_error()(scope, receive, send_with_id)
            # A response already under way (a stream) cannot become a 500: it
            # stays unfinished, and the server closes the connection.
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            _log_request(scope, status or 500, elapsed_ms, request_id)
            current_request_id.reset(token)


def _log_request(scope: Scope, status: int, duration_ms: float, request_id: str) -> None:
    path = _path(scope)
    key_id = scope.get("state", {}).get("api_key_id")
    fields = {
        "request_id": request_id,
        "method": scope["method"],
        "path": path,
        "status": status,
        "duration_ms": round(duration_ms, 1),
    }
    if key_id is not None:
        fields["api_key_id"] = key_id
    level = logging.DEBUG if scope["path"] in _QUIET_PATHS else logging.INFO
    log.log(level, "%s %s %d %.1fms", scope["method"], path, status, duration_ms, extra=fields)
