"""Rows for service tests, written through the test's session (never committed)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from shared.jobs import states as js
from shared.models import Job, JobData, User


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
