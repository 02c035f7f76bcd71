"""Service functions on real PostgreSQL, each test inside one transaction that is
rolled back at its end (polar's tests/fixtures/database.py).

The database is the session's, migrated once (tests/conftest.py). A test's
session joins the outer transaction through a savepoint, so code that commits
or rolls back its own work (`begin_nested`, `commit`) still runs as written,
and nothing a test writes is seen by another. Nothing commits the outer
transaction, so side effects deferred to a commit (Redis messages) never run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()
