"""Repair what crashes leave behind. Postgres is the source of truth.

- A `running` job whose heartbeat is older than LEASE_TIMEOUT_S lost its
  worker (killed, or cut off from the database): it is queued again, or failed
  with `worker_lost` once MAX_ATTEMPTS runs are spent, so a job that keeps
  killing workers ends instead of looping.
- Queued work that a free slot could run, left untouched for QUEUED_TIMEOUT_S,
  may have lost its wake-up (a crash between commit and enqueue, or Redis lost
  it): wake-ups are sent again, one per user with such work (at most 16: each
  slot that wakes keeps running jobs while there are any). A spare wake-up is
  harmless: it claims by the scheduler's policy, and claiming is atomic.
- Work that waits for a window or a backoff gets a wake-up for when it ends.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update

from shared import job_states as js
from shared.config import get_settings
from shared.db import session_scope
from shared.job_events import job_changed
from shared.job_lifecycle import ENDED_FIELDS, job_ended, worker_lost
from shared.models import Job
from shared.queue import enqueue_job, wake_at
from shared.scheduling import has_runnable_work, next_wake_up

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
        stale = session.scalar(
            select(Job.id)
            .where(
                Job.status == js.QUEUED,
                Job.updated_at < now - timedelta(seconds=settings.queued_timeout_s),
                or_(Job.run_after.is_(None), Job.run_after <= now),
            )
            .limit(1)
        )
        wake_ups = has_runnable_work(session=session) if stale is not None else 0
        later = next_wake_up(session=session)
    for job_id in recovered:
        enqueue_job(job_id)
    for _ in range(wake_ups):
        enqueue_job(stale)
    if later is not None:
        wake_at(later)
    if failed or recovered or wake_ups:
        log.info(
            "sweeper: %d lost run(s) queued again, %d failed for good, %d wake-up(s) resent",
            len(recovered),
            len(failed),
            wake_ups,
        )
    return len(recovered) + wake_ups
