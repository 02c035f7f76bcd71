"""Delete data past its time, keep the record that it existed.

Payloads and results of jobs finished more than RETENTION_S ago are deleted;
the job rows (state, timings, errors) stay. Idempotency keys are forgotten
after IDEMPOTENCY_TTL_S.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from shared.core.config import get_settings
from shared.core.db import database_now, session_scope
from shared.core.metrics import fold_finished_jobs
from shared.jobs.repository import forget_idempotency_keys, purge_job_data

log = logging.getLogger(__name__)


def purge_expired_data() -> tuple[int, int]:
    """Returns (jobs whose data was deleted, idempotency keys forgotten)."""
    settings = get_settings()
    with session_scope() as session:
        # PostgreSQL's clock stamped finished_at and created_at: ages are read on it,
        # as the sweeper reads a run's (a node's own clock may be off).
        now = database_now(session)
        purged = purge_job_data(
            session=session, finished_before=now - timedelta(seconds=settings.retention_s)
        )
        forgotten = forget_idempotency_keys(
            session=session, created_before=now - timedelta(seconds=settings.idempotency_ttl_s)
        )
    # With no one scraping /metrics, the finished jobs' log would only grow: the
    # sweep folds it into the totals (shared.core.metrics), an hour's jobs at most.
    fold_finished_jobs()
    if purged or forgotten:
        log.info(
            "retention: data of %d job(s) deleted, %d idempotency key(s) forgotten",
            purged,
            forgotten,
        )
    return purged, forgotten
