"""Who runs next: PostgreSQL decides, every worker slot asks.

Policy (docs/scheduling.md):
- free capacity goes round-robin between users with runnable queued work: the
  user served longest ago goes first (`users.last_served_at`), FIFO within a user;
- no user runs more than MAX_RUNNING_PER_USER jobs at once;
- a job runs only when its token has upstream budget for every call it will
  make (shared.upstream.pacing); a user whose token has none is paused until its window
  ends (`users.upstream_paused_until`) and skipped meanwhile, holding no slot.

Celery messages are wake-ups ("there is work"): the slot that receives one
claims whatever this policy says, not necessarily the job the message names.
Concurrent slots are kept apart by a row lock on the user (SKIP LOCKED: a slot
never waits for another, it serves the next user) and by the guarded UPDATE
that claims a job, so a job is never claimed twice and a cap never overrun.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.accounts.security import decrypt_secret, token_fingerprint
from shared.core.config import get_settings
from shared.core.db import session_scope
from shared.jobs.lifecycle import Claim, claim_job
from shared.upstream import pacing

log = logging.getLogger(__name__)

# Looks at the queue one claim may take while other slots hold the users it wants.
_MAX_ROUNDS = 200

# How many users one look at the queue considers; more are looked at only when
# all of these are paused or lost a race to another slot.
CANDIDATES = 16

# Users in round-robin order with the oldest runnable job of each. The LATERAL
# probes use the partial index on queued jobs; walking users in served order
# stops as soon as enough candidates are found.
_CANDIDATES = text(
    """
    SELECT u.id AS user_id, head.id AS job_id, head.type AS job_type,
           u.tabpfn_token_encrypted AS token_encrypted
    FROM users u
    CROSS JOIN LATERAL (
        SELECT j.id, j.type FROM jobs j
        WHERE j.user_id = u.id AND j.status = 'queued'
          AND (j.run_after IS NULL OR j.run_after <= now())
        ORDER BY j.created_at, j.id
        LIMIT 1
    ) head
    WHERE (u.upstream_paused_until IS NULL OR u.upstream_paused_until <= now())
      AND (SELECT count(*) FROM jobs r WHERE r.user_id = u.id AND r.status = 'running') < :cap
      AND NOT (u.id = ANY(CAST(:skip AS uuid[])))
    ORDER BY u.last_served_at, u.id
    LIMIT :n
    """
)

_LOCK_USER = text("SELECT id FROM users WHERE id = :user_id FOR UPDATE SKIP LOCKED")
_RUNNING = text("SELECT count(*) FROM jobs WHERE user_id = :user_id AND status = 'running'")
# The head job again, under the user's lock: another slot may have taken it.
_HEAD = text(
    """
    SELECT id, type FROM jobs
    WHERE user_id = :user_id AND status = 'queued' AND (run_after IS NULL OR run_after <= now())
    ORDER BY created_at, id
    LIMIT 1
    """
)
_SERVED = text("UPDATE users SET last_served_at = clock_timestamp() WHERE id = :user_id")
_PAUSE = text(
    """
    UPDATE users SET upstream_paused_until = :until
    WHERE id = :user_id AND (upstream_paused_until IS NULL OR upstream_paused_until < :until)
    """
)


@dataclass(frozen=True)
class Paused:
    """A user skipped for want of upstream budget, and until when."""

    user_id: uuid.UUID
    until: datetime


@dataclass(frozen=True)
class Pick:
    claim: Claim | None
    paused: list[Paused]


def _fingerprint(token_encrypted: bytes | memoryview) -> str:
    return token_fingerprint(decrypt_secret(bytes(token_encrypted)))  # bytea arrives as memoryview


# Another slot holds the user's row for a few milliseconds: try again, do not skip them.
BUSY = "busy"


def _try_user(
    session: Session, user_id: uuid.UUID, token_encrypted: bytes, cap: int
) -> Claim | Paused | str | None:
    """Claim the user's next job in this transaction; Paused when its token has no budget,
    BUSY when another slot is serving the user right now, None when nothing is claimable."""
    if session.execute(_LOCK_USER, {"user_id": user_id}).first() is None:
        return BUSY
    if session.execute(_RUNNING, {"user_id": user_id}).scalar_one() >= cap:
        return None
    head = session.execute(_HEAD, {"user_id": user_id}).first()
    if head is None:
        return None
    fingerprint = _fingerprint(token_encrypted)
    calls = pacing.calls_for(head.type)
    reserved_at = time.time()
    until = pacing.reserve(fingerprint, calls, now=reserved_at)
    if until is not None:
        session.execute(_PAUSE, {"user_id": user_id, "until": until})
        return Paused(user_id=user_id, until=until)
    claim = claim_job(session=session, job_id=head.id)
    if claim is None:  # cannot happen under the user's lock, but never spend for nothing
        pacing.refund(fingerprint, calls, reserved_at=reserved_at)
        return None
    session.execute(_SERVED, {"user_id": user_id})
    return claim


def claim_next() -> Pick:
    """Claim the job that should run next, if any; committed when this returns.

    Many slots wake at once after a burst: a user another slot is serving is not
    skipped but looked at again after that slot's claim commits (milliseconds),
    so every woken slot finds work while there is any.
    """
    cap = get_settings().max_running_per_user
    paused: list[Paused] = []
    skip: list[uuid.UUID] = []  # nothing claimable for them now (cap, budget, raced)
    for _ in range(_MAX_ROUNDS):
        with session_scope() as session:
            candidates = session.execute(
                _CANDIDATES, {"cap": cap, "n": CANDIDATES, "skip": [str(u) for u in skip]}
            ).all()
        if not candidates:
            return Pick(claim=None, paused=paused)
        busy = False
        for candidate in candidates:
            with session_scope() as session:
                outcome = _try_user(session, candidate.user_id, candidate.token_encrypted, cap)
            if isinstance(outcome, Claim):
                return Pick(claim=outcome, paused=paused)
            if outcome == BUSY:
                busy = True
                continue
            if isinstance(outcome, Paused):
                paused.append(outcome)
            skip.append(candidate.user_id)
        if busy:
            time.sleep(random.uniform(0.002, 0.01))
    return Pick(claim=None, paused=paused)


def pause_user(*, session: Session, user_id: uuid.UUID, until: datetime) -> None:
    """Hold all of a user's jobs until `until` (the upstream's rate window reopens)."""
    session.execute(_PAUSE, {"user_id": user_id, "until": until})


def next_wake_up(*, session: Session) -> datetime | None:
    """When queued work that nothing can run now becomes runnable (a pause or a backoff ends)."""
    return session.execute(
        text(
            """
            SELECT least(
                (SELECT min(u.upstream_paused_until) FROM users u
                 WHERE u.upstream_paused_until > now()
                   AND EXISTS (SELECT 1 FROM jobs j WHERE j.user_id = u.id
                               AND j.status = 'queued')),
                (SELECT min(run_after) FROM jobs WHERE status = 'queued' AND run_after > now())
            )
            """
        )
    ).scalar_one_or_none()


def has_runnable_work(*, session: Session) -> int:
    """How many users have work a free slot could claim now (capped at CANDIDATES)."""
    return len(
        session.execute(
            _CANDIDATES,
            {"cap": get_settings().max_running_per_user, "n": CANDIDATES, "skip": []},
        ).all()
    )
