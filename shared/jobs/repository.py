"""Statements on jobs that the worker's loops make outside a transition.

The transitions themselves (claim, heartbeat, stage, succeed, fail, requeue)
are single guarded UPDATEs in shared.jobs.lifecycle; here are the reads a run
needs, the model row a refit changes, and the sweeper's and retention's bulk
statements. Each function takes the caller's session: the caller decides the
transaction (and that no connection is held across an upstream call).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Row, bindparam, delete, or_, select, update
from sqlalchemy.orm import Session

from shared.jobs import states as js
from shared.jobs.lifecycle import ENDED_FIELDS, worker_lost
from shared.models import FittedModel, IdempotencyKey, Job, JobData, User

# A claimed job, its data, its owner's encrypted token and the model it predicts with.
RunRows = tuple[Job, JobData | None, bytes, FittedModel | None]


# Built once (each job's claim runs it): composing it costs about what running it does.
_RUN_ROWS = (
    select(Job, JobData, User.tabpfn_token_encrypted)
    .join(User, User.id == Job.user_id)
    .outerjoin(JobData, JobData.job_id == Job.id)
    .where(Job.id == bindparam("job_id"))
)


def load_job_for_run(*, session: Session, job_id: uuid.UUID) -> RunRows:
    """A claimed job, its data, its owner's encrypted token and the model it predicts with."""
    job, data, token_encrypted = session.execute(_RUN_ROWS, {"job_id": job_id}).one()
    model = session.get(FittedModel, job.model_id) if job.model_id else None
    return job, data, token_encrypted, model


def running_jobs_on_host(*, session: Session, host: str) -> list[Row]:
    """(id, worker, attempts) of the running jobs whose claim names a process of `host`."""
    return list(
        session.execute(
            select(Job.id, Job.worker, Job.attempts).where(
                Job.status == js.RUNNING, Job.worker.like(f"{host}:%")
            )
        ).all()
    )


def training_data(*, session: Session, fit_job_id: uuid.UUID) -> bytes | None:
    """The training table (Parquet) a model was fitted on; None once retention deleted it."""
    data = session.get(JobData, fit_job_id)
    return data.train_parquet if data else None


def type_and_token(*, session: Session, job_id: uuid.UUID) -> Row | None:
    """A job's type and its owner's stored token, without its data (a run that could
    not read its rows gives back its reserved calls with these)."""
    return session.execute(
        select(Job.type, User.tabpfn_token_encrypted)
        .join(User, User.id == Job.user_id)
        .where(Job.id == job_id)
    ).one_or_none()


def model_exists(*, session: Session, model_id: uuid.UUID) -> bool:
    """Whether a model is still stored (its owner may delete it while a job uses it)."""
    return session.get(FittedModel, model_id) is not None


def set_upstream_model_id(*, session: Session, model_id: uuid.UUID, upstream_model_id: str) -> bool:
    """Point a model at the upstream copy a refit made; False when the model is gone."""
    pointed = session.execute(
        update(FittedModel)
        .where(FittedModel.id == model_id)
        .values(upstream_model_id=upstream_model_id)
        .returning(FittedModel.id)
    ).first()
    return pointed is not None


def _abandoned(lease_timeout_s: float, now: datetime):
    return update(Job).where(
        Job.status == js.RUNNING,
        Job.heartbeat_at < now - timedelta(seconds=lease_timeout_s),
    )


def fail_abandoned_runs(
    *, session: Session, lease_timeout_s: float, max_attempts: int, now: datetime
) -> list[Row]:
    """Fail with `worker_lost` the silent runs that spent every attempt; their ENDED_FIELDS."""
    return list(
        session.execute(
            _abandoned(lease_timeout_s, now)
            .where(Job.attempts >= max_attempts)
            .values(**worker_lost(max_attempts))
            .returning(*ENDED_FIELDS)
        ).all()
    )


def requeue_abandoned_runs(
    *, session: Session, lease_timeout_s: float, max_attempts: int, now: datetime
) -> list[uuid.UUID]:
    """Queue again the silent runs with attempts left; their ids."""
    return list(
        session.scalars(
            _abandoned(lease_timeout_s, now)
            .where(Job.attempts < max_attempts)
            .values(status=js.QUEUED, stage=None, run_after=None, updated_at=now)
            .returning(Job.id)
        ).all()
    )


def stale_queued_job(
    *, session: Session, queued_timeout_s: float, now: datetime
) -> uuid.UUID | None:
    """A runnable queued job left untouched for `queued_timeout_s`, if any."""
    return session.scalar(
        select(Job.id)
        .where(
            Job.status == js.QUEUED,
            Job.updated_at < now - timedelta(seconds=queued_timeout_s),
            or_(Job.run_after.is_(None), Job.run_after <= now),
        )
        .limit(1)
    )


def purge_job_data(*, session: Session, finished_before: datetime) -> int:
    """Delete payloads and results of jobs finished before then; how many jobs had some."""
    expired_jobs = select(Job.id).where(
        Job.status.in_(js.FINISHED), Job.finished_at < finished_before
    )
    return session.execute(
        update(JobData)
        .where(
            JobData.job_id.in_(expired_jobs),
            or_(
                JobData.train_parquet.is_not(None),
                JobData.test_parquet.is_not(None),
                JobData.result.is_not(None),
            ),
        )
        .values(train_parquet=None, test_parquet=None, result=None, size_bytes=0)
    ).rowcount


def forget_idempotency_keys(*, session: Session, created_before: datetime) -> int:
    return session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at < created_before)
    ).rowcount
