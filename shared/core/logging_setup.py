"""Process-wide logging: one line per event, level from LOG_LEVEL, text or JSON.

Structured fields travel as `extra={...}` on the log call; with LOG_FORMAT=json
each becomes a key of the line. The request id of the HTTP request being
served, if any, is added to every line logged while serving it: a `request_id`
key in JSON, `[<id>]` after the logger's name in text.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from shared.core.config import get_settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s %(message)s"

# Set by the API's request middleware for the duration of one request.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


class _TextFormatter(logging.Formatter):
    """TEXT_FORMAT: lines logged while serving a request name it, others are unchanged."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request_tag = f" [{request_id}]" if request_id else ""
        return super().format(record)


def _formatter(log_format: str) -> logging.Formatter:
    if log_format.lower() == "json":
        # "time" is ISO 8601 in UTC, which log shippers parse without configuration.
        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    return _TextFormatter(TEXT_FORMAT)


def configure_logging() -> None:
    settings = get_settings()
    handler = logging.StreamHandler()
    handler.setFormatter(_formatter(settings.log_format))
    handler.addFilter(_RequestIdFilter())
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    # httpx logs every request line with its URL; signed upload URLs carry credentials.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic announces each of its autogenerate plugins at INFO on import.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
