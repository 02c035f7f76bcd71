"""Tell waiting API processes that a job changed, the moment its change commits.

Every state or stage transition marks the job in the session; after the
transaction commits, the job's id is published on one Redis channel. API
processes wake their long-polls and event streams from it. A lost message
costs only latency: waiters re-read Postgres every few seconds anyway.
"""

from __future__ import annotations

import logging
import uuid

import redis
from sqlalchemy import event
from sqlalchemy.orm import Session

from shared.redis_client import get_redis

log = logging.getLogger(__name__)

CHANNEL = "tabpfn-api:job-changes"
_CHANGED = "jobs_changed"


def job_changed(session: Session, job_id: uuid.UUID, status: str) -> None:
    """Publish "<job_id> <status>" once the session's transaction has committed.

    The status lets a waiter that only cares about the end (a long-poll) ignore
    stage changes without reading the database.
    """
    session.info.setdefault(_CHANGED, {})[str(job_id)] = status


@event.listens_for(Session, "after_commit")
def _publish_committed(session: Session) -> None:
    changed = session.info.pop(_CHANGED, None)
    if not changed:
        return
    try:
        client = get_redis()
        for job_id, status in changed.items():
            client.publish(CHANNEL, f"{job_id} {status}")
    except redis.RedisError as exc:
        log.warning("job change not published (%s); waiters will re-check", type(exc).__name__)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_CHANGED, None)
