"""A worker takes no job before the database has its release's schema: one started
before `migrate` read columns the database did not have, and failed each job it took
for good ("unexpected error")."""

from __future__ import annotations

import threading

from sqlalchemy import text

from shared.core.db import session_scope
from shared.core.schema_version import HEAD, REVISIONS
from tests.support.inprocess import configured
from worker import lifecycle


def _set_revision(revision: str) -> None:
    with session_scope() as session:
        session.execute(text("update alembic_version set version_num = :r"), {"r": revision})


def test_a_worker_waits_for_migrate_before_its_first_job(services, monkeypatch, caplog):
    with configured(services):
        monkeypatch.setattr(lifecycle, "SCHEMA_POLL_S", 0.1)
        _set_revision(REVISIONS[-2])  # the release before: `migrate` has not run yet
        waiter = threading.Thread(target=lifecycle._wait_for_the_schema, daemon=True)
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive(), "it took jobs on the old schema"
        assert any("waiting for it before taking jobs" in r.getMessage() for r in caplog.records)
        _set_revision(HEAD)  # migrated
        waiter.join(5.0)
        assert not waiter.is_alive()
        # A newer release's revision (migrated first in a rolling upgrade): served on.
        _set_revision("f" * 12)
        newer = threading.Thread(target=lifecycle._wait_for_the_schema, daemon=True)
        newer.start()
        newer.join(5.0)
        assert not newer.is_alive(), "it waited for a newer release's schema"
