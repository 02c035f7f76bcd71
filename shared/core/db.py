"""The database engine and sessions, built once per process from Settings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import ColumnElement, Connection, Engine, create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from shared.core import pool_liveness
from shared.core.config import get_settings


@lru_cache
def get_engine() -> Engine:
    settings = get_settings().require("DATABASE_URL")
    # The pool bounds a process's connections (a worker's 64 jobs share it: none
    # holds one while it waits on the upstream). A connection that died while
    # Postgres restarted is replaced instead of failing the next request: checked
    # without a round trip (pool_liveness; a pre-ping would be one per transaction).
    engine = create_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # A statement's values never reach an error's text, so never a log line:
        # they may be users' data or stored secrets.
        hide_parameters=True,
    )
    pool_liveness.install(engine)
    return engine


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope(*, autocommit: bool = False) -> Iterator[Session]:
    """One unit of work: committed on success, rolled back on any error.

    `autocommit`: each statement commits on its own, and the unit costs one
    round trip per statement. psycopg2 opens every transaction with a BEGIN of
    its own and ends it with a COMMIT, two more round trips, which a unit of one
    statement (a job's store, a long-poll's look) does not need. Only for units
    whose statements need no transaction together: one write, or reads that need
    no common snapshot. `after_commit` actions still run after the last one.
    """
    if autocommit:
        with (
            _autocommit_connection() as connection,
            _unit(get_sessionmaker()(bind=connection)) as session,
        ):
            yield session
        return
    with _unit(get_sessionmaker()()) as session:
        yield session


@contextmanager
def _unit(session: Session) -> Iterator[Session]:
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def _autocommit_connection() -> Iterator[Connection]:
    """A pooled connection in psycopg2's autocommit mode, given back as it was.

    Set on the driver's connection, not through SQLAlchemy's isolation level:
    that is reset with a SET statement at check-in, a round trip of its own.
    The flag itself is client-side only; COMMIT and ROLLBACK outside a
    transaction are no-ops in psycopg2, so closing sends nothing either.
    """
    with get_engine().connect() as connection:
        driver = connection.connection.dbapi_connection
        # psycopg2 refuses the flag inside a transaction: a pooled connection is
        # handed out with none open (SQLAlchemy rolls back at check-in, and the
        # liveness ping ends the one it opens).
        driver.autocommit = True
        try:
            yield connection
        finally:
            if not driver.closed:
                driver.autocommit = False


def open_pool(connections: int) -> None:
    """Open `connections` pooled connections now (one round trip each), then keep them.

    For a process's warm-up: a burst of first jobs or requests should not each
    wait for PostgreSQL to start a backend for it. Raises when the database is down.
    """
    engine = get_engine()
    opened = []
    try:
        for _ in range(max(1, connections)):
            connection = engine.connect()
            opened.append(connection)
            connection.execute(text("select 1"))
    finally:
        for connection in opened:
            connection.close()  # back to the pool, still open


def on_database_clock(moment: datetime) -> ColumnElement[datetime]:
    """`moment`, read on this node's clock, as the same distance from PostgreSQL's now().

    A stored moment that PostgreSQL compares with its now() (a backoff's end, a
    pause's) is set on PostgreSQL's clock, so a node whose own clock is off moves
    it by nothing more than the time the statement takes to arrive.
    """
    return func.now() + timedelta(seconds=moment.timestamp() - time.time())


def database_now(session: Session) -> datetime:
    """PostgreSQL's now(): the clock that stamps heartbeats and compares stored moments."""
    return session.execute(select(func.now())).scalar_one()
