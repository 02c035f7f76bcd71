"""`session_scope(autocommit=True)`: one round trip per statement, on real PostgreSQL.

psycopg2 wraps every transaction in a BEGIN and a COMMIT of their own, two round
trips that a unit of one statement (a job's store, a long-poll's look) does not
need. The autocommit unit sends its statements alone, still runs the actions
deferred to its commit, and hands its pooled connection back transactional.
"""

from __future__ import annotations

import pytest
from sqlalchemy import event, text

from shared.core import pool_liveness
from shared.core.after_commit import after_commit
from shared.core.db import get_engine, session_scope
from tests.support.inprocess import configured


@pytest.fixture
def engine(services):
    with configured(services):
        yield get_engine()


def _transaction_ids(**scope) -> list[int]:
    with session_scope(**scope) as session:
        return [session.execute(text("select txid_current()")).scalar_one() for _ in range(2)]


def test_each_statement_commits_on_its_own_and_the_connection_comes_back_transactional(engine):
    first, second = _transaction_ids(autocommit=True)
    assert first != second, "autocommit: every statement is a transaction of its own"
    same, again = _transaction_ids()
    assert same == again, "the next unit on the pooled connection is one transaction again"
    with engine.connect() as connection:
        assert connection.connection.dbapi_connection.autocommit is False


def test_no_begin_or_commit_is_sent(engine):
    # psycopg2 sends BEGIN and COMMIT itself, below SQLAlchemy's cursor events: what
    # it sends shows in the server's view of the connection, as the transaction's
    # start. In a transaction, now() is when BEGIN arrived, before the statement;
    # alone, the statement is its own transaction and now() is its own start.
    query = text("select now() = statement_timestamp()")
    with session_scope(autocommit=True) as session:
        assert session.execute(query).scalar_one() is True
        assert session.execute(query).scalar_one() is True
    with session_scope() as session:
        session.execute(text("select pg_sleep(0.01)"))
        assert session.execute(query).scalar_one() is False


def test_deferred_actions_run_after_the_unit_and_not_after_a_failure(engine):
    ran: list[str] = []
    with session_scope(autocommit=True) as session:
        session.execute(text("select 1"))
        after_commit(session, lambda: ran.append("published"))
        assert ran == [], "not before the unit ends"
    assert ran == ["published"]

    with pytest.raises(RuntimeError), session_scope(autocommit=True) as session:
        after_commit(session, lambda: ran.append("must not run"))
        raise RuntimeError("the unit failed")
    assert ran == ["published"]


def test_statements_sent_alone_are_the_only_traffic(engine):
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with session_scope(autocommit=True) as session:
            session.execute(text("select 1"))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # SQLAlchemy's isolation-level option would reset the connection with a SET
    # statement at check-in: one more round trip, which this scope avoids.
    assert statements == ["select 1"]


def test_a_connection_pinged_at_checkout_can_still_autocommit(engine, monkeypatch):
    """A pooled connection idle past IDLE_PING_S is pinged at checkout, and psycopg2
    opens a transaction for the ping; psycopg2 refuses autocommit inside one. The
    ping ends its transaction."""
    with session_scope() as session:
        session.execute(text("select 1"))
    monkeypatch.setattr(pool_liveness, "IDLE_PING_S", -1.0)  # every checkout pings
    first, second = _transaction_ids(autocommit=True)
    assert first != second
