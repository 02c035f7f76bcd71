"""The sweeper on real PostgreSQL and Redis (worker/sweeper.py): a run is lost when its
heartbeat is older than the lease on the database's clock, whatever the sweeping
node's own clock says.

Sends to the broker are recorded instead of published; everything else is real.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import select, text

from shared import queue
from shared.core.db import session_scope
from shared.jobs import states as js
from shared.jobs.scheduling import claim_next
from shared.models import Job
from tests.services.test_scheduling import LIMITS, make_jobs, make_user
from tests.support.inprocess import configured
from worker.sweeper import sweep

LEASE_S = 30


@pytest.fixture
def sweeping(services, monkeypatch):
    with configured(services, **LIMITS, LEASE_TIMEOUT_S=str(LEASE_S)):
        monkeypatch.setattr(queue, "_send", lambda task, ident, countdown: True)
        yield


def _state(job_id: uuid.UUID) -> tuple[str, int]:
    with session_scope() as session:
        return session.execute(select(Job.status, Job.attempts).where(Job.id == job_id)).one()


def test_a_node_whose_clock_runs_ahead_takes_no_live_run_for_lost(sweeping):
    [job_id] = make_jobs(make_user(), 1)
    assert claim_next().claim is not None
    # This node's clock runs ten leases ahead: the run's fresh heartbeat looks old to it.
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=10 * LEASE_S), tick=True):
        sweep()
    assert _state(job_id) == (js.RUNNING, 1), "a live run was taken for lost"

    # A run whose heartbeat is older than the lease on the database's clock is lost.
    with session_scope() as session:
        age = text("UPDATE jobs SET heartbeat_at = now() - :s * interval '1 s' WHERE id = :id")
        session.execute(age, {"s": 2 * LEASE_S, "id": job_id})
    # Even to a node whose clock runs behind by more than the lease.
    with time_machine.travel(datetime.now(UTC) - timedelta(seconds=10 * LEASE_S), tick=True):
        sweep()
    assert _state(job_id) == (js.QUEUED, 1)
