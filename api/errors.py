"""One place that turns every failure into `{"detail", "code"}` with the right status.

An unhandled exception's 500 is answered by the request middleware
(api/request_log.py) with `internal_error()`, so it carries the request id.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from starlette.exceptions import HTTPException

from api.multipart import UnreadableJson
from shared.core.errors import INVALID_API_KEY, NotFound, ServiceError, Unauthorized

log = logging.getLogger(__name__)

# Starlette's own HTTP errors (unknown route, wrong method…) by status.
HTTP_CODES = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
}
OTHER_HTTP_CODE = "http_error"
# RFC 9110: a 401 names the scheme that would have worked.
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
JSON_HINT = (
    "send the body with the header content-type: application/json "
    "(curl: -H 'content-type: application/json')"
)


def _error(status: int, code: str, detail: str, /, **extra) -> JSONResponse:
    headers = _CHALLENGE if status == 401 else None
    return JSONResponse(
        {"detail": detail, "code": code, **extra}, status_code=status, headers=headers
    )


def _where(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    response = _error(exc.status_code, exc.code, exc.message, **exc.extra)
    if "retry_after" in exc.extra:
        response.headers["Retry-After"] = str(exc.extra["retry_after"])
    return response


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    raw = exc.errors()
    errors = [{"loc": _where(e["loc"]), "message": e["msg"]} for e in raw]
    first = errors[0] if errors else {"loc": "body", "message": "invalid"}
    detail = f"{first['loc']}: {first['message']}."
    if raw and raw[0].get("type") == "json_invalid":
        detail = _malformed_json(exc, raw[0])
    elif raw and raw[0]["loc"] == ("body",) and not _declares_json(request):
        # curl -d without -H sends a form content type: the JSON arrives as text.
        detail = f"The body was not read as JSON: {JSON_HINT}."
    return _error(422, "validation_error", detail, errors=errors[:20])


def _declares_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _malformed_json(exc: RequestValidationError, error: dict) -> str:
    """Where the JSON broke, as line and column, with the usual cause in a shell."""
    reason = str(error.get("ctx", {}).get("error", "invalid JSON")).rstrip(".")
    if isinstance(exc.__cause__, UnreadableJson):  # not its syntax: no place to show
        return f"The body is not JSON this service can read: {reason}."
    position = error["loc"][-1] if isinstance(error["loc"][-1], int) else 0
    # FastAPI hands over the text it failed to decode (never read the body again:
    # the stream is spent and would wait forever).
    text = exc.body if isinstance(exc.body, str) else ""
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return (
        f"The body is not valid JSON: {reason} at line {line}, column {column}. "
        "In a shell, wrap the JSON in single quotes (-d '{\"task\": ...}') so that its "
        "double quotes reach the server."
    )


async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, OTHER_HTTP_CODE)
    headers = getattr(exc, "headers", None) or (_CHALLENGE if exc.status_code == 401 else None)
    return JSONResponse(
        {"detail": str(exc.detail), "code": code}, status_code=exc.status_code, headers=headers
    )


# Every foreign key to users is named fk_<table>_user_id_users, and to jobs
# fk_<table>_job_id_jobs (shared/models.py).
_TO_USERS = "_user_id_users"
_TO_JOBS = "_job_id_jobs"
_FOREIGN_KEY_VIOLATION = "23503"  # PostgreSQL's SQLSTATE


async def _integrity_error(request: Request, exc: IntegrityError) -> JSONResponse:
    """A row refused for naming a user that is no more: the account was deleted
    while this request, authenticated before, was under way. Its key is gone, so
    the answer is the one that key gets from now on: 401, nothing stored. A row
    naming a job that is no more (deleted meanwhile) is that job's 404."""
    if getattr(exc.orig, "pgcode", None) == _FOREIGN_KEY_VIOLATION:
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None) or ""
        if constraint.endswith(_TO_USERS):
            return await _service_error(request, Unauthorized(INVALID_API_KEY))
        if constraint.endswith(_TO_JOBS):  # e.g. a webhook redelivery racing DELETE /jobs/{id}
            return await _service_error(request, NotFound("The job was deleted."))
    return await _database_error(request, exc)


async def _unstorable_value(_: Request, exc: DataError) -> JSONResponse:
    """A value PostgreSQL refused (SQLSTATE class 22: NUL in text or JSON, NaN in JSON,
    a number out of its column's range): a 422, not the 503 of an outage.

    Such a value comes from the request, and the same request fails the same way
    every time, so "retry shortly" was a promise no retry kept. The transaction is
    rolled back, so nothing is stored. It is a gap in the checks at the door, which
    should refuse the value by name: logged to be found, with the database's first
    line (the reason, without the statement or its values).
    """
    reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
    log.warning("database refused a request's value: %s", reason)
    return _error(
        422,
        "validation_error",
        "The request holds a value the database cannot store (such as a NUL character); "
        "nothing was stored.",
    )


# In an outage every request fails the same way: each kind of failure (its class and
# SQLSTATE) is logged with its traceback once a minute, its other 503s in a line each.
TRACEBACK_EVERY_S = 60.0
_last_traceback: dict[tuple[str, str | None], float] = {}


class DatabaseFailure(Exception):
    """What the log shows of a database error: its class, SQLSTATE and first line."""


async def _database_error(_: Request, exc: DBAPIError) -> JSONResponse:
    """PostgreSQL unreachable, or a statement it refused: 503, and the reason logged.

    Only the first line of the driver's message is written down, under the error's
    own traceback (where our code ran the statement): the lines after it
    (PostgreSQL's DETAIL) and the statement's parameters hold values, which may be
    users' data or stored secrets.
    """
    sqlstate = getattr(exc.orig, "pgcode", None)
    kind = (type(exc).__name__, sqlstate)
    reason = (str(exc.orig).strip().splitlines() or ["no message"])[0]
    summary = f"{kind[0]}{f' (SQLSTATE {sqlstate})' if sqlstate else ''}: {reason}"
    now = time.monotonic()
    exc_info = None
    if now - _last_traceback.get(kind, float("-inf")) >= TRACEBACK_EVERY_S:
        _last_traceback[kind] = now
        exc_info = (DatabaseFailure, DatabaseFailure(summary), exc.__traceback__)
    log.error("database error, answered 503 service_unavailable: %s", summary, exc_info=exc_info)
    return _error(503, "service_unavailable", "The service is briefly unavailable; retry shortly.")


def internal_error() -> JSONResponse:
    """The answer to an unhandled exception, which the caller has logged."""
    return _error(500, "internal_error", "An internal error occurred; it has been logged.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DataError, _unstorable_value)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
