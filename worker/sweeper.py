"""Repair what crashes leave behind. Postgres is the source of truth.

- A `running` job whose heartbeat is older than LEASE_TIMEOUT_S lost its
  worker (killed, or cut off from the database): it is queued again, or failed
  with `worker_lost` once MAX_ATTEMPTS runs are spent, so a job that keeps
  killing workers ends instead of looping.
- A `queued` job untouched for QUEUED_TIMEOUT_S lost its message (a crash
  between commit and enqueue, or Redis lost it): it is sent again. A duplicate
  message is harmless, because claiming a job is atomic.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, update

from shared import job_states as js
from shared.config import get_settings
from shared.db import session_scope
from shared.job_events import job_changed
from shared.job_lifecycle import ENDED_FIELDS, job_ended, worker_lost
from shared.models import Job
from shared.queue import enqueue_job

log = logging.getLogger(__name__)


def sweep() -> int:
    """Run one sweep; returns how many jobs were sent to the workers."""
    settings = get_settings()
    now = datetime.now(UTC)
    with session_scope() as session:
        abandoned = update(Job).where(
            Job.status == js.RUNNING,
            Job.heartbeat_at < now - timedelta(seconds=settings.lease_timeout_s),
        )
        failed = session.execute(
            abandoned.where(Job.attempts >= settings.max_attempts)
            .values(**worker_lost(settings.max_attempts))
            .returning(*ENDED_FIELDS)
        ).all()
        for ended in failed:
            job_ended(session, ended)
        recovered = session.scalars(
            abandoned.where(Job.attempts < settings.max_attempts)
            .values(status=js.QUEUED, stage=None, run_after=None, updated_at=now)
            .returning(Job.id)
        ).all()
        for job_id in recovered:
            job_changed(session, job_id, js.QUEUED)
        stale = session.scalars(
            update(Job)
            .where(
                Job.status == js.QUEUED,
                Job.updated_at < now - timedelta(seconds=settings.queued_timeout_s),
                or_(Job.run_after.is_(None), Job.run_after <= now),
            )
            # Touched, so the next sweep waits a full timeout before resending.
            .values(updated_at=now)
            .returning(Job.id)
        ).all()
    # Recovered runs were just touched, so they are never among the stale ones too.
    to_send = [*recovered, *stale]
    for job_id in to_send:
        enqueue_job(job_id)
    if failed or to_send:
        log.info(
            "sweeper: %d lost run(s) queued again, %d failed for good, %d message(s) resent",
            len(recovered),
            len(failed),
            len(stale),
        )
    return len(to_send)
