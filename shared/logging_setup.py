"""Process-wide logging: one line per event, level from LOG_LEVEL."""

from __future__ import annotations

import logging

from shared.config import get_settings


def configure_logging() -> None:
    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # httpx logs every request line with its URL; signed upload URLs carry credentials.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic announces each of its autogenerate plugins at INFO on import.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
