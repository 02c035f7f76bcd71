"""Why a queued job has not started yet, and until when: what `waiting` shows clients.

Read at request time from the same state the scheduler uses (shared.jobs.scheduling),
so it never disagrees with what the workers will do:
- `retry_backoff`: a transient upstream fault; the retry waits until `until`;
- `upstream_rate_limit`: the TabPFN token's rate window is full until `until`;
- `fair_share`: the user already runs MAX_RUNNING_PER_USER jobs;
- `capacity`: waiting for a free worker slot (other users' turns come first
  in round-robin order, or every slot is busy).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.core.config import get_settings
from shared.jobs import states as js
from shared.jobs.lifecycle import WAIT_RETRY_BACKOFF

REASONS = ("retry_backoff", "upstream_rate_limit", "fair_share", "capacity")


@dataclass(frozen=True)
class UserQueue:
    """One user's scheduling state: their token's pause and their running jobs."""

    paused_until: datetime | None
    running: int


def user_queue(*, session: Session, user_id: uuid.UUID) -> UserQueue:
    row = session.execute(
        text(
            """
            SELECT u.upstream_paused_until,
                   (SELECT count(*) FROM jobs j
                    WHERE j.user_id = u.id AND j.status = 'running') AS running
            FROM users u WHERE u.id = :user_id
            """
        ),
        {"user_id": user_id},
    ).one()
    return UserQueue(paused_until=row.upstream_paused_until, running=row.running)


def waiting(job: Any, queue: UserQueue, *, now: datetime | None = None) -> dict[str, Any] | None:
    """`{"reason", "until"}` for a queued job; None for any other."""
    if job.status != js.QUEUED:
        return None
    now = now or datetime.now(UTC)
    if job.run_after is not None and job.run_after > now:
        return {"reason": job.wait_reason or WAIT_RETRY_BACKOFF, "until": job.run_after}
    if queue.paused_until is not None and queue.paused_until > now:
        return {"reason": "upstream_rate_limit", "until": queue.paused_until}
    if queue.running >= get_settings().max_running_per_user:
        return {"reason": "fair_share", "until": None}
    return {"reason": "capacity", "until": None}
