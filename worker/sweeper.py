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

Every age is read on PostgreSQL's clock, the one that stamped the heartbeats:
a sweeping node whose own clock ran a minute ahead would otherwise take every
live run for lost, and queue it again beside the worker still running it.
"""

from __future__ import annotations

import logging

from shared.core.config import get_settings
from shared.core.db import database_now, session_scope
from shared.jobs import states as js
from shared.jobs.events import job_changed
from shared.jobs.lifecycle import job_ended
from shared.jobs.repository import fail_abandoned_runs, requeue_abandoned_runs, stale_queued_job
from shared.jobs.scheduling import has_runnable_work, next_wake_up
from shared.queue import enqueue_job, wake_at, wake_now

log = logging.getLogger(__name__)


def sweep() -> int:
    """Run one sweep; returns how many jobs were sent to the workers."""
    settings = get_settings()
    with session_scope() as session:
        now = database_now(session)
        lease = {"lease_timeout_s": settings.lease_timeout_s, "max_attempts": settings.max_attempts}
        failed = fail_abandoned_runs(session=session, **lease, now=now)
        for ended in failed:
            job_ended(session, ended)
        recovered = requeue_abandoned_runs(session=session, **lease, now=now)
        for job_id in recovered:
            job_changed(session, job_id, js.QUEUED)
        stale = stale_queued_job(
            session=session, queued_timeout_s=settings.queued_timeout_s, now=now
        )
        wake_ups = has_runnable_work(session=session) if stale is not None else 0
        later = next_wake_up(session=session)
    for job_id in recovered:
        enqueue_job(job_id)
    for _ in range(wake_ups):
        wake_now()  # a backlog's wake-up: each claim it makes wakes one more slot
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
