"""Deleting one finished job: its row, tables, result, webhook log and idempotency key.

For the user who wants a job's data gone now rather than after RETENTION_S
(`DELETE /jobs/{id}`). Only a finished job: an unfinished one is canceled first,
so no worker is running what is deleted. A fit's model stays (it is deleted
with `DELETE /models/{id}`); its `fit_job_id` then names a job that is gone.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete
from sqlalchemy.orm import Session

from shared.core.errors import JobNotFinished
from shared.core.metrics import fold_finished_jobs
from shared.jobs.states import FINISHED
from shared.jobs.submit import get_job
from shared.models import Job, User


def delete_job(*, session: Session, user: User, job_id: uuid.UUID) -> None:
    """Delete the caller's finished job; NotFound for none, JobNotFinished while it runs."""
    job = get_job(session=session, user=user, job_id=job_id)
    if job.status not in FINISHED:
        raise JobNotFinished(
            f"Job {job_id} is {job.status}: cancel it first (POST /api/v1/jobs/{job_id}/cancel), "
            "then delete it.",
            job_status=job.status,
        )
    # The /metrics totals are counters built from finished jobs' rows as they are
    # folded (shared.core.metrics): this one is counted before its row goes.
    fold_finished_jobs(session)
    # The cascades take its data, result, webhook deliveries and idempotency key.
    session.execute(delete(Job).where(Job.id == job.id))
