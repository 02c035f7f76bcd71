"""Repair what a crash between commit and enqueue, or a lost worker, left behind.

Postgres is the source of truth: a job still `queued` long after it was
created is sent again (a duplicate delivery is harmless, the claim is atomic);
a `running` job past RUNNING_TIMEOUT_S lost its worker and is handed back, or
failed once its attempts are spent.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from shared import job_states as js
from shared.config import get_settings
from shared.db import session_scope
from shared.models import Job
from shared.queue import enqueue_job

log = logging.getLogger(__name__)


def sweep() -> None:
    settings = get_settings()
    now = datetime.now(UTC)
    with session_scope() as session:
        abandoned = update(Job).where(
            Job.status == js.RUNNING,
            Job.updated_at < now - timedelta(seconds=settings.running_timeout_s),
        )
        session.execute(
            abandoned.where(Job.attempts >= settings.max_attempts).values(
                status=js.FAILED,
                finished_at=now,
                error_code="worker_lost",
                error_message="The job's worker stopped responding on every attempt.",
            )
        )
        session.execute(
            abandoned.where(Job.attempts < settings.max_attempts).values(
                status=js.QUEUED, stage=None
            )
        )
        stale = session.scalars(
            select(Job.id).where(
                Job.status == js.QUEUED,
                Job.updated_at < now - timedelta(seconds=settings.queued_timeout_s),
            )
        ).all()
        # Touch them so the next sweep waits a full timeout before resending.
        if stale:
            session.execute(update(Job).where(Job.id.in_(stale)).values(updated_at=now))
    for job_id in stale:
        enqueue_job(job_id)
    if stale:
        log.info("sweeper re-enqueued %d job(s)", len(stale))
