"""A node whose clock is off, on real PostgreSQL and Redis: the sweeper
(worker/sweeper.py) ages runs on the database's clock, and the moments a node
stores (a 429's pause, a retry's backoff, a webhook's next try) are set on it too,
and retention ages data on it (docs/scheduling.md, "One clock for the fleet").
The token budget's clock is tested in test_pacing.py.

Sends to the broker are dropped instead of published; everything else is real.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import select, text

from shared import queue
from shared.core.db import database_now, session_scope
from shared.jobs import states as js
from shared.jobs.lifecycle import requeue_job
from shared.jobs.scheduling import claim_next, pause_user
from shared.models import Job, User, WebhookDelivery
from shared.webhooks.deliveries import record_attempt
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


AHEAD = timedelta(minutes=10)


def test_a_pause_and_a_backoff_a_node_stores_are_on_the_databases_clock(sweeping):
    user_id = make_user()
    [job_id] = make_jobs(user_id, 1)
    claim = claim_next().claim
    assert claim is not None
    with time_machine.travel(datetime.now(UTC) + AHEAD, tick=True), session_scope() as session:
        # A 429 said 30 s; a transient fault's backoff is 20 s: on this node's clock.
        reopens = datetime.now(UTC) + timedelta(seconds=30)
        pause_user(session=session, user_id=user_id, until=reopens)
        assert requeue_job(session=session, claim=claim, code="x", message="x", delay_s=20)
    with session_scope() as session:
        now = database_now(session)
        paused = session.scalar(select(User.upstream_paused_until).where(User.id == user_id))
        run_after = session.scalar(select(Job.run_after).where(Job.id == job_id))
    # 30 s and 20 s from the database's now, not ten minutes more.
    assert abs((paused - now).total_seconds() - 30) < 2
    assert abs((run_after - now).total_seconds() - 20) < 2


def test_a_webhook_retry_a_node_schedules_is_due_on_the_databases_clock(sweeping):
    [job_id] = make_jobs(make_user(), 1)
    with session_scope() as session:
        delivery = WebhookDelivery(
            job_id=job_id,
            event_id="msg_clock",
            event_type="job.succeeded",
            url="https://example.com/hook",
            payload="{}",
            status="pending",
        )
        session.add(delivery)
        session.flush()
        delivery_id = delivery.id
    with time_machine.travel(datetime.now(UTC) + AHEAD, tick=True), session_scope() as session:
        record_attempt(
            session=session,
            delivery_id=delivery_id,
            claimed_attempt=0,  # never claimed: attempts is still 0
            status_code=503,
            latency_ms=5,
            error=None,
            outcome="pending",
            retry_in_s=20,
        )
    with session_scope() as session:
        now = database_now(session)
        due = session.scalar(
            select(WebhookDelivery.next_attempt_at).where(WebhookDelivery.id == delivery_id)
        )
    assert abs((due - now).total_seconds() - 20) < 2


@pytest.fixture
def retaining(services):
    with configured(services, **LIMITS, RETENTION_S="3600"):
        yield


def test_retention_ages_data_on_the_databases_clock(retaining):
    """A node whose clock runs hours ahead deletes no data younger than RETENTION_S
    on the database's clock, which stamped finished_at."""
    from worker.retention import purge_expired_data

    [job_id] = make_jobs(make_user(), 1)
    finish = text(
        "UPDATE jobs SET status = 'succeeded', finished_at = now() - :s * interval '1 s' "
        "WHERE id = :id"
    )
    with session_scope() as session:
        session.execute(finish, {"s": 0, "id": job_id})
        session.execute(
            text("INSERT INTO job_data (job_id, size_bytes, result) VALUES (:id, 2, '{}')"),
            {"id": job_id},
        )

    def held() -> bool:
        with session_scope() as session:
            query = text("SELECT result IS NOT NULL FROM job_data WHERE job_id = :id")
            return session.execute(query, {"id": job_id}).scalar_one()

    with time_machine.travel(datetime.now(UTC) + timedelta(hours=2), tick=True):
        purge_expired_data()
    assert held(), "data an hour short of its retention was deleted"

    with session_scope() as session:
        session.execute(finish, {"s": 7200, "id": job_id})
    # Even a node whose clock runs hours behind deletes data past it.
    with time_machine.travel(datetime.now(UTC) - timedelta(hours=2), tick=True):
        purge_expired_data()
    assert not held(), "data past its retention on the database's clock was kept"
