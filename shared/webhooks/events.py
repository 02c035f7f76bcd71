"""Webhook events of finished jobs: recorded with the state change, sent after commit.

An event row is written in the same transaction that finishes the job, and
its id is sent to the workers only once that transaction has committed (a
SQLAlchemy `after_commit` hook), so a delivery never refers to a state that
was rolled back. If the send is lost, `sweep_webhooks` finds the pending row.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.core.after_commit import after_commit
from shared.core.config import get_settings
from shared.core.errors import Conflict, NotFound
from shared.jobs import states as js
from shared.models import Job, WebhookAttempt, WebhookDelivery
from shared.queue import enqueue_webhook

log = logging.getLogger(__name__)

EVENT_TYPES = {
    js.SUCCEEDED: "job.succeeded",
    js.FAILED: "job.failed",
    js.CANCELED: "job.canceled",
}
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


def _utc_text(moment: datetime) -> str:
    """ISO 8601 in UTC to the millisecond with a Z, as the docs and Standard Webhooks'
    examples write it (isoformat's +00:00 and microseconds were neither)."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _payload(job: Job, event_type: str) -> str:
    """The thin event: what happened and where to look, never the data itself; with the
    caller's own labels (`metadata`), so the receiver finds its record without a lookup."""
    base = get_settings().public_url.rstrip("/")
    data = {
        "job_id": str(job.id),
        "job_type": job.type,
        "status": job.status,
        "model_id": str(job.model_id) if job.model_id else None,
        "error": {"code": job.error_code, "message": job.error_message}
        if job.status == js.FAILED
        else None,
        "metadata": job.labels,
        "links": {
            "job": f"{base}/api/v1/jobs/{job.id}",
            "result": f"{base}/api/v1/jobs/{job.id}/result",
        },
    }
    body = {"type": event_type, "timestamp": _utc_text(datetime.now(UTC)), "data": data}
    return json.dumps(body, separators=(",", ":"))


def _new_delivery(
    session: Session, job: Job, *, event_id: str, event_type: str, payload: str
) -> WebhookDelivery:
    delivery = WebhookDelivery(
        id=uuid.uuid4(),
        job_id=job.id,
        event_id=event_id,
        event_type=event_type,
        url=job.callback_url,
        payload=payload,
        status=PENDING,
        attempts=0,
    )
    session.add(delivery)
    session.flush()
    after_commit(session, partial(enqueue_webhook, delivery.id))
    return delivery


def record_job_event(*, session: Session, job_id: uuid.UUID) -> WebhookDelivery | None:
    """Record the finished job's event for its callback_url, if it has one."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or not job.callback_url or job.status not in EVENT_TYPES:
        return None
    event_type = EVENT_TYPES[job.status]
    return _new_delivery(
        session,
        job,
        event_id=f"msg_{uuid.uuid4().hex}",
        event_type=event_type,
        payload=_payload(job, event_type),
    )


def deliveries_of(*, session: Session, job_id: uuid.UUID) -> list[tuple[WebhookDelivery, list]]:
    deliveries = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id)
        .order_by(WebhookDelivery.created_at)
    ).all()
    result = []
    for delivery in deliveries:
        attempts = session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery.id)
            .order_by(WebhookAttempt.id)
        ).all()
        result.append((delivery, list(attempts)))
    return result


def redeliver(*, session: Session, job: Job) -> WebhookDelivery:
    """Send the job's event again, with the same webhook-id and body."""
    if not job.callback_url:
        raise Conflict("This job has no callback_url.")
    latest = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job.id)
        .order_by(WebhookDelivery.created_at.desc())
        .limit(1)
    ).first()
    if latest is None:
        if job.status not in EVENT_TYPES:
            raise Conflict(f"Job {job.id} has not finished; there is no event to send yet.")
        recorded = record_job_event(session=session, job_id=job.id)
        if recorded is None:  # its row is gone: deleted since it was read (DELETE /jobs/{id})
            raise NotFound(f"No job {job.id}.")
        return recorded
    return _new_delivery(
        session,
        job,
        event_id=latest.event_id,
        event_type=latest.event_type,
        payload=latest.payload,
    )
