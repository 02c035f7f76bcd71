"""Rows for service tests, written through the test's session (never committed)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from shared.jobs import states as js
from shared.models import FittedModel, Job, JobData, User, WebhookDelivery
from shared.webhooks.events import PENDING


def make_user(*, session: Session) -> User:
    # The stored secrets are only read by code that calls the upstream or signs
    # webhooks; these tests do neither.
    user = User(tabpfn_token_encrypted=b"not-a-token", webhook_secret_encrypted=b"not-a-secret")
    session.add(user)
    session.flush()
    return user


def make_job(
    *, session: Session, user: User, type_: str = js.FIT_PREDICT, status: str = js.QUEUED
) -> Job:
    """A job with an (empty) data row, as a submit leaves it."""
    job = Job(
        id=uuid.uuid4(),
        user_id=user.id,
        type=type_,
        status=status,
        task=js.CLASSIFICATION,
        params={},
        attempts=0,
    )
    session.add(job)
    session.flush()
    session.add(JobData(job_id=job.id, size_bytes=0))
    session.flush()
    return job


def new_model(job: Job, **fields: Any) -> FittedModel:
    """A model fitted by `job` (not added to a session): a two-column classifier,
    `fields` changing any column."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "user_id": job.user_id,
        "fit_job_id": job.id,
        "task": js.CLASSIFICATION,
        "options": {"n_estimators": 4},
        "upstream_model_id": "upstream-1",
        "columns": ["a", "b"],
        "classes": ["no", "yes"],
        "n_rows": 3,
        "n_features": 2,
    }
    return FittedModel(**{**values, **fields})


def new_delivery(job: Job, **fields: Any) -> WebhookDelivery:
    """A pending webhook delivery of `job`'s end (not added to a session), `fields`
    changing any column."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "job_id": job.id,
        "event_id": f"msg_{uuid.uuid4().hex}",
        "event_type": "job.succeeded",
        "url": "https://hooks.example.com/x",
        "payload": "{}",
        "status": PENDING,
        "attempts": 0,
    }
    return WebhookDelivery(**{**values, **fields})
