"""Tell waiting API processes that a job changed, the moment its change commits.

Every state or stage transition marks the job in the session; after the
transaction commits, the job's id is published on one Redis channel. API
processes wake their long-polls and event streams from it. A lost message
costs only latency: waiters re-read Postgres every few seconds anyway.
"""

from __future__ import annotations

import logging
import uuid
from functools import partial

import redis
from sqlalchemy.orm import Session

from shared.after_commit import after_commit
from shared.redis_client import get_redis

log = logging.getLogger(__name__)

CHANNEL = "tabpfn-api:job-changes"


def job_changed(session: Session, job_id: uuid.UUID, status: str) -> None:
    """Publish "<job_id> <status>" once the session's transaction has committed.

    The status lets a waiter that only cares about the end (a long-poll) ignore
    stage changes without reading the database.
    """
    after_commit(session, partial(_publish, f"{job_id} {status}"))


def _publish(message: str) -> None:
    try:
        get_redis().publish(CHANNEL, message)
    except redis.RedisError as exc:
        log.warning("job change not published (%s); waiters will re-check", type(exc).__name__)
