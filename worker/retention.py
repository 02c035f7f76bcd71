"""Delete data past its time, keep the record that it existed.

Payloads and results of jobs finished more than RETENTION_S ago are deleted;
the job rows (state, timings, errors) stay. Idempotency keys are forgotten
after IDEMPOTENCY_TTL_S.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update

from shared import job_states as js
from shared.config import get_settings
from shared.db import session_scope
from shared.models import IdempotencyKey, Job, JobData

log = logging.getLogger(__name__)


def purge_expired_data() -> tuple[int, int]:
    """Returns (jobs whose data was deleted, idempotency keys forgotten)."""
    settings = get_settings()
    now = datetime.now(UTC)
    expired_jobs = select(Job.id).where(
        Job.status.in_(js.FINISHED),
        Job.finished_at < now - timedelta(seconds=settings.retention_s),
    )
    with session_scope() as session:
        purged = session.execute(
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
        forgotten = session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.created_at < now - timedelta(seconds=settings.idempotency_ttl_s)
            )
        ).rowcount
    if purged or forgotten:
        log.info(
            "retention: data of %d job(s) deleted, %d idempotency key(s) forgotten",
            purged,
            forgotten,
        )
    return purged, forgotten
