"""`migrate` waits for PostgreSQL to accept connections, as the services it precedes do.

Under docker compose `migrate` starts once PostgreSQL's health check passes, and
runs once: a refused connection then (a server still starting, a name not yet
in DNS) failed it, and with it every service that waits for its success.
Errors that waiting cannot mend (a wrong password, a missing database) fail at once.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

# What a server that is not up yet answers (libpq's messages), lower-cased.
NOT_UP_YET = (
    "connection refused",
    "the database system is starting up",
    "the database system is shutting down",
    "could not translate host name",
    "no route to host",
    "timeout expired",
)


def wait_for_database(url: str, *, timeout_s: float = 60.0, every_s: float = 1.0) -> None:
    """Return once `url` accepts a connection; raise its OperationalError if it does not
    within `timeout_s`, or at once for an error that waiting cannot mend."""
    engine = create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + timeout_s
    told = False
    try:
        while True:
            try:
                with engine.connect():
                    return
            except OperationalError as exc:
                reason = str(exc.orig).lower()
                if not any(mark in reason for mark in NOT_UP_YET):
                    raise
                if time.monotonic() + every_s > deadline:
                    raise
                if not told:
                    log.warning("migrate: the database does not accept connections yet; waiting")
                    told = True
                time.sleep(every_s)
    finally:
        engine.dispose()
