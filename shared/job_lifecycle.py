"""State transitions a worker makes, each one atomic in Postgres.

A transition is a single UPDATE guarded by the state it expects, so two
deliveries of one job id cannot both claim it, and a worker that lost its
claim (the sweeper re-queued the job) cannot overwrite a newer run's outcome.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from shared import job_states as js
from shared.models import Job, JobData


@dataclass(frozen=True)
class Claim:
    job_id: uuid.UUID
    attempt: int


def _owned(claim: Claim):
    return (Job.id == claim.job_id) & (Job.status == js.RUNNING) & (Job.attempts == claim.attempt)


def claim_job(*, session: Session, job_id: uuid.UUID) -> Claim | None:
    """Move a queued job to running; None if it is not queued (someone else has it)."""
    attempt = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == js.QUEUED)
        .values(
            status=js.RUNNING,
            stage=js.STAGE_LOADING,
            attempts=Job.attempts + 1,
            started_at=func.now(),
            error_code=None,
            error_message=None,
        )
        .returning(Job.attempts)
    ).scalar_one_or_none()
    return None if attempt is None else Claim(job_id=job_id, attempt=attempt)


def set_stage(*, session: Session, claim: Claim, stage: str) -> bool:
    result = session.execute(update(Job).where(_owned(claim)).values(stage=stage))
    return result.rowcount == 1


def succeed_job(
    *,
    session: Session,
    claim: Claim,
    result: dict[str, Any],
    model_id: uuid.UUID | None,
    timings: dict[str, Any] | None,
) -> bool:
    """Record the outcome; False (and nothing written) if the claim was lost."""
    values: dict[str, Any] = {
        "status": js.SUCCEEDED,
        "stage": None,
        "finished_at": func.now(),
        "upstream_timings": timings,
    }
    if model_id is not None:
        values["model_id"] = model_id
    updated = session.execute(update(Job).where(_owned(claim)).values(**values))
    if updated.rowcount != 1:
        return False
    session.execute(update(JobData).where(JobData.job_id == claim.job_id).values(result=result))
    return True


def fail_job(*, session: Session, claim: Claim, code: str, message: str) -> bool:
    updated = session.execute(
        update(Job)
        .where(_owned(claim))
        .values(
            status=js.FAILED,
            finished_at=func.now(),
            error_code=code,
            error_message=message,
        )
    )
    return updated.rowcount == 1


def requeue_job(*, session: Session, claim: Claim, code: str, message: str) -> bool:
    """Hand a job back to the queue after a transient fault, keeping the fault visible."""
    updated = session.execute(
        update(Job)
        .where(_owned(claim))
        .values(status=js.QUEUED, stage=None, error_code=code, error_message=message)
    )
    return updated.rowcount == 1
