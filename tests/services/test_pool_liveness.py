"""Pooled connections that died in the pool are replaced without a pre-ping.

shared/core/pool_liveness.py: at checkout, a pooled connection whose socket the
server closed (a restart, a terminated backend) is dropped and a fresh one
handed out; a hot connection costs no round trip; one idle longer than
IDLE_PING_S is pinged. Real PostgreSQL, a real pool.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from shared.core import pool_liveness


@pytest.fixture
def pooled(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    pool_liveness.install(engine)
    yield engine
    engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("select pg_backend_pid()")).scalar_one()


def _terminate(database_url: str, pid: int) -> None:
    admin = create_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            assert connection.execute(text("select pg_terminate_backend(:p)"), {"p": pid}).scalar()
            # Until the backend is gone, its socket may not have been closed yet.
            for _ in range(200):
                alive = connection.execute(
                    text("select count(*) from pg_stat_activity where pid = :p"), {"p": pid}
                ).scalar_one()
                if not alive:
                    break
                connection.execute(text("select pg_sleep(0.01)"))
    finally:
        admin.dispose()


def test_a_connection_the_server_closed_is_replaced_at_checkout(pooled, database_url):
    first = _backend_pid(pooled)
    _terminate(database_url, first)

    # Without a liveness check this statement would fail on the dead connection.
    second = _backend_pid(pooled)

    assert second != first
    assert pooled.pool.checkedout() == 0 and pooled.pool.size() == 1


def test_without_the_check_the_same_dead_connection_fails(database_url):
    """The control: the pool alone hands out the dead connection (what the check prevents)."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        _terminate(database_url, _backend_pid(engine))
        with pytest.raises(Exception) as failure, engine.connect() as connection:
            connection.execute(text("select 1"))
        assert "terminat" in str(failure.value).lower() or "closed" in str(failure.value).lower()
    finally:
        engine.dispose()


def _pings_during(use, monkeypatch) -> int:
    """How many liveness pings `use()` caused (each would be a round trip)."""
    pings: list[int] = []
    original = pool_liveness._ping

    def counting(dbapi_connection):
        pings.append(1)
        original(dbapi_connection)

    monkeypatch.setattr(pool_liveness, "_ping", counting)
    use()
    monkeypatch.setattr(pool_liveness, "_ping", original)
    return len(pings)


def test_a_hot_connection_is_not_pinged_and_an_idle_one_is(pooled, monkeypatch):
    _backend_pid(pooled)  # opened and checked in
    assert _pings_during(lambda: _backend_pid(pooled), monkeypatch) == 0

    monkeypatch.setattr(pool_liveness, "IDLE_PING_S", 0.0)
    assert _pings_during(lambda: _backend_pid(pooled), monkeypatch) == 1


def test_an_idle_connection_that_fails_its_ping_is_replaced(pooled, database_url, monkeypatch):
    """A connection dropped silently in between cannot be shown on a real server here;
    a failing ping stands in for it: the pool must hand out a fresh connection."""
    first = _backend_pid(pooled)
    monkeypatch.setattr(pool_liveness, "IDLE_PING_S", 0.0)
    failed: list[bool] = []
    original = pool_liveness._ping

    def failing_once(dbapi_connection):
        if not failed:
            failed.append(True)
            raise pool_liveness.exc.DisconnectionError("dropped in between")
        original(dbapi_connection)

    monkeypatch.setattr(pool_liveness, "_ping", failing_once)
    assert _backend_pid(pooled) != first
    assert failed == [True]
