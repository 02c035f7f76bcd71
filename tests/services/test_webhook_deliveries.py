"""Claiming, recording and postponing webhook deliveries: an attempt's outcome lands
only on its own claim; a postponed delivery counts no attempt and has one holder."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from shared.jobs import states as js
from shared.models import WebhookAttempt, WebhookDelivery
from shared.webhooks.deliveries import claim_delivery, postpone_delivery, record_attempt
from shared.webhooks.events import PENDING, SUCCEEDED
from tests.support.factories import make_job, make_user, new_delivery

LEASE = timedelta(seconds=45)


def _delivery(session) -> WebhookDelivery:
    job = make_job(session=session, user=make_user(session=session), status=js.SUCCEEDED)
    delivery = new_delivery(job)
    session.add(delivery)
    session.flush()
    return delivery


def _lease_runs_out(session, delivery_id: uuid.UUID) -> None:
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(next_attempt_at=func.now() - timedelta(seconds=1))
    )


def _record(session, delivery_id, claimed: int, *, outcome: str, status_code: int | None):
    return record_attempt(
        session=session,
        delivery_id=delivery_id,
        claimed_attempt=claimed,
        status_code=status_code,
        latency_ms=10,
        error=None if outcome == SUCCEEDED else "The receiver answered 503.",
        outcome=outcome,
        retry_in_s=30 if outcome == PENDING else None,
    )


def test_the_outcome_of_a_claim_that_was_taken_over_is_dropped(session):
    delivery_id = _delivery(session).id
    first = claim_delivery(session=session, delivery_id=delivery_id, lease=LEASE).attempts
    # The first attempt outlived its lease; the sweeper's message claimed the row again.
    _lease_runs_out(session, delivery_id)
    second = claim_delivery(session=session, delivery_id=delivery_id, lease=LEASE).attempts
    assert second == first + 1

    assert _record(session, delivery_id, second, outcome=SUCCEEDED, status_code=204)
    # The stale attempt ends last: it must not put a delivered event back to pending.
    assert not _record(session, delivery_id, first, outcome=PENDING, status_code=503)

    row = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    assert (row.status, row.next_attempt_at) == (SUCCEEDED, None)
    logged = session.scalars(
        select(WebhookAttempt.status_code).where(WebhookAttempt.delivery_id == delivery_id)
    ).all()
    assert logged == [204]


def test_an_outcome_of_the_current_claim_is_recorded(session):
    delivery_id = _delivery(session).id
    claimed = claim_delivery(session=session, delivery_id=delivery_id, lease=LEASE).attempts
    assert _record(session, delivery_id, claimed, outcome=PENDING, status_code=503)
    row = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    assert row.status == PENDING and row.next_attempt_at is not None


def test_a_postponed_delivery_counts_no_attempt_and_is_moved_once(session):
    delivery_id = _delivery(session).id
    later = timedelta(seconds=5)
    assert postpone_delivery(session=session, delivery_id=delivery_id, delay=later)
    # A second message for it (the sweeper's) finds it not due: its holder will come back.
    assert not postpone_delivery(session=session, delivery_id=delivery_id, delay=later)
    assert claim_delivery(session=session, delivery_id=delivery_id, lease=LEASE) is None
    row = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    assert (row.status, row.attempts) == (PENDING, 0)
