"""A job's webhook deliveries: the log of attempts, and sending again."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from api.deps import CurrentUser, SessionDep
from api.schemas import ErrorOut, WebhookAttemptOut, WebhookDeliveryOut
from shared.jobs import submit as jobs
from shared.models import WebhookDelivery
from shared.webhooks import events as webhooks

router = APIRouter(prefix="/jobs", tags=["webhooks"])


def _out(delivery: WebhookDelivery, attempts: list) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        id=delivery.id,
        webhook_id=delivery.event_id,
        event_type=delivery.event_type,
        url=delivery.url,
        status=delivery.status,
        created_at=delivery.created_at,
        completed_at=delivery.completed_at,
        next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
        attempts=[WebhookAttemptOut.model_validate(a, from_attributes=True) for a in attempts],
    )


@router.get(
    "/{job_id}/webhooks",
    summary="The job's webhook deliveries and every attempt",
    responses={404: {"model": ErrorOut, "description": "not_found"}},
)
def list_deliveries(
    job_id: uuid.UUID, session: SessionDep, user: CurrentUser
) -> list[WebhookDeliveryOut]:
    job = jobs.get_job(session=session, user=user, job_id=job_id)
    return [_out(d, a) for d, a in webhooks.deliveries_of(session=session, job_id=job.id)]


@router.post(
    "/{job_id}/webhooks/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send the job's event again",
    responses={
        404: {"model": ErrorOut, "description": "not_found"},
        409: {"model": ErrorOut, "description": "conflict: no callback_url, or not finished"},
    },
)
def redeliver(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> WebhookDeliveryOut:
    """Same `webhook-id` and body as before, so receivers can recognise a repeat."""
    job = jobs.get_job(session=session, user=user, job_id=job_id)
    # Sent once SessionDep commits, before the response (shared.webhooks.events, after_commit).
    return _out(webhooks.redeliver(session=session, job=job), [])
