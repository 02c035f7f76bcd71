"""Statements on webhook deliveries that the worker makes while it sends them.

Recording events and redelivery (the API's side) are in shared.webhooks.events.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from shared.models import Job, User, WebhookAttempt, WebhookDelivery
from shared.webhooks.events import PENDING


def _due():
    return or_(
        WebhookDelivery.next_attempt_at.is_(None),
        WebhookDelivery.next_attempt_at <= func.now(),
    )


def claim_delivery(
    *, session: Session, delivery_id: uuid.UUID, lease: timedelta
) -> WebhookDelivery | None:
    """Take a due delivery; the lease keeps a duplicate message from sending it twice.

    The returned row's `attempts` names this claim: record_attempt takes it back.
    """
    return session.scalars(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == PENDING, _due())
        .values(attempts=WebhookDelivery.attempts + 1, next_attempt_at=func.now() + lease)
        .returning(WebhookDelivery)
    ).one_or_none()


def postpone_delivery(*, session: Session, delivery_id: uuid.UUID, delay: timedelta) -> bool:
    """Move a due delivery `delay` later, no attempt counted; False when it is not due
    (another message holds it) or is done."""
    moved = session.scalar(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == PENDING, _due())
        .values(next_attempt_at=func.now() + delay)
        .returning(WebhookDelivery.id)
    )
    return moved is not None


def pending_delivery_due(
    *, session: Session, delivery_id: uuid.UUID
) -> tuple[uuid.UUID, float] | None:
    """A pending delivery's owner (the user whose job it is of) and the seconds until it
    is due on PostgreSQL's clock (0 when it is); None when it is done or gone."""
    found = session.execute(
        select(
            Job.user_id,
            func.greatest(
                0.0,
                func.coalesce(
                    func.extract("epoch", WebhookDelivery.next_attempt_at - func.now()), 0.0
                ),
            ),
        )
        .join(WebhookDelivery, WebhookDelivery.job_id == Job.id)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == PENDING)
    ).first()
    return None if found is None else (found[0], float(found[1]))


def secret_of_job_owner(*, session: Session, job_id: uuid.UUID) -> str | None:
    """The encrypted webhook secret of the job's owner."""
    return session.scalar(
        select(User.webhook_secret_encrypted)
        .join(Job, Job.user_id == User.id)
        .where(Job.id == job_id)
    )


def record_attempt(
    *,
    session: Session,
    delivery_id: uuid.UUID,
    claimed_attempt: int,
    status_code: int | None,
    latency_ms: int,
    error: str | None,
    outcome: str,
    retry_in_s: float | None,
) -> bool:
    """Log one attempt and move the delivery on: pending for `retry_in_s` more seconds
    (from PostgreSQL's now(), the clock that finds it due), or done.

    Only while the delivery is still the claim `claimed_attempt` made (its `attempts`
    then): an attempt that outlived its lease, the delivery claimed again since, would
    overwrite the newer attempt's outcome. Its own is dropped: returns False.
    """
    values: dict = {"status": outcome, "next_attempt_at": None}
    if outcome == PENDING:
        values["next_attempt_at"] = func.now() + timedelta(seconds=retry_in_s or 0)
    else:
        values["completed_at"] = func.now()
    moved = session.scalar(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.attempts == claimed_attempt,
        )
        .values(**values)
        .returning(WebhookDelivery.id)
    )
    if moved is None:
        return False
    session.add(
        WebhookAttempt(
            delivery_id=delivery_id,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
        )
    )
    return True


def overdue_deliveries(*, session: Session, overdue_s: float) -> list[uuid.UUID]:
    """Pending deliveries due for at least `overdue_s`: their own message was lost."""
    overdue = func.now() - timedelta(seconds=overdue_s)
    return list(
        session.scalars(
            select(WebhookDelivery.id).where(
                WebhookDelivery.status == PENDING,
                WebhookDelivery.created_at <= overdue,
                or_(
                    WebhookDelivery.next_attempt_at.is_(None),
                    WebhookDelivery.next_attempt_at <= overdue,
                ),
            )
        ).all()
    )
