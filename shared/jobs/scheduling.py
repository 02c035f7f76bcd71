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
serves the next user rather than wait; only when every candidate is taken does
it queue on one's lock) and by the guarded UPDATE that claims a job, so a job is
never claimed twice and a cap never overrun.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Row, exists, or_, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from shared.accounts.security import SecretUnreadable, decrypt_secret, token_fingerprint
from shared.core.config import get_settings
from shared.core.db import on_database_clock, session_scope
from shared.jobs import states as js
from shared.jobs.lifecycle import Claim, claim_head
from shared.models import Job, User
from shared.upstream import pacing

log = logging.getLogger(__name__)

# Looks at the queue one claim may take while other slots hold the users it wants.
_MAX_ROUNDS = 200

# How many users one look at the queue considers; more are looked at only when
# all of these are paused or lost a race to another slot.
CANDIDATES = 16

# The claim's commit does not wait for its WAL flush (set in the statement that
# takes the user's lock, for the transaction, to save a round trip): should
# PostgreSQL crash before the flush, the job is queued again (the sweeper resends
# it) and this run's later writes are refused as those of a lost claim; a pause
# lost that way is found again at the next 429.
_ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true)"

# Users in round-robin order with the oldest runnable job of each. The EXISTS on
# queued jobs lets the planner start from whichever side is smaller: the users in
# served order (most of them have work: it stops after the first few), or the users
# with queued jobs, from the partial index (most accounts are idle). The LATERAL
# alone left it one way, walking every account in served order, and idle ones sort
# first (those never served, and those served long ago): 48-281 ms a look with
# 20,000 idle accounts and one busy one, on every claim; 0.3 ms with the EXISTS,
# and the same 0.65 ms as before with 100,000 jobs queued over 1,000 users, plus
# about 0.1 ms of planning (docs/scheduling.md). `{also}` and `{locked}`: what _FIRST_FREE adds.
_CANDIDATES_SQL = """
    SELECT u.id AS user_id, head.id AS job_id, head.type AS job_type,
           u.tabpfn_token_encrypted AS token_encrypted{also}
    FROM users u
    CROSS JOIN LATERAL (
        SELECT j.id, j.type FROM jobs j
        WHERE j.user_id = u.id AND j.status = 'queued'
          AND (j.run_after IS NULL OR j.run_after <= now())
        ORDER BY j.created_at, j.id
        LIMIT 1
    ) head
    WHERE EXISTS (SELECT FROM jobs q WHERE q.user_id = u.id AND q.status = 'queued')
      AND (u.upstream_paused_until IS NULL OR u.upstream_paused_until <= now())
      AND (SELECT count(*) FROM jobs r WHERE r.user_id = u.id AND r.status = 'running') < :cap
      AND NOT (u.id = ANY(CAST(:skip AS uuid[])))
    ORDER BY u.last_served_at, u.id
    LIMIT :n{locked}"""
_CANDIDATES = text(_CANDIDATES_SQL.format(also="", locked=""))
# The first candidate no other slot holds, locked as `_LOCK_USER` locks it (LIMIT 1):
# the look and the lock in one round trip, for a claim that needs one job (`first_free`).
_FIRST_FREE = text(
    _CANDIDATES_SQL.format(
        also=f", {_ASYNC_COMMIT} AS async_commit", locked=" FOR NO KEY UPDATE OF u SKIP LOCKED"
    )
)

# The user's row lock, which keeps concurrent slots apart: FOR NO KEY UPDATE, the
# lock an UPDATE of a non-key column takes, not FOR UPDATE. A submit's INSERT of a
# job takes FOR KEY SHARE on its owner's row (the foreign key); FOR UPDATE would
# queue every submit of a user behind the slots claiming that user's jobs, and
# those slots behind the submits, so one user's burst convoyed the API and the
# workers on a single row.
_USER_LOCK_SQL = f"""
    SELECT id, {_ASYNC_COMMIT} FROM users
    WHERE id = :user_id FOR NO KEY UPDATE"""
_LOCK_USER = text(_USER_LOCK_SQL + " SKIP LOCKED")
# The same lock, waited for (`_WAIT_FOR_USER`): when every user with work is being
# served by other slots (one busy user, many woken slots), queueing on the lock
# hands it over the moment the holder commits, where sleeping and looking again
# would burn a candidates query per slot per look. Bounded by _LOCK_WAIT.
_WAIT_FOR_USER = text(_USER_LOCK_SQL)
_LOCK_WAIT = text("SET LOCAL lock_timeout = '2s'")
_LOCK_NOT_AVAILABLE = "55P03"  # what PostgreSQL raises when lock_timeout runs out


@dataclass(frozen=True)
class Paused:
    """A user skipped for want of upstream budget, and until when."""

    user_id: uuid.UUID
    until: datetime


@dataclass(frozen=True)
class Pick:
    claim: Claim | None
    paused: list[Paused]
    # Runnable work remained after this claim (another user's, or this user's next
    # job within the cap): a slot woken for a backlog wakes one more (worker.runner).
    more: bool = False


def look_at_queue(
    *, session: Session, cap: int, skip: list[uuid.UUID], lock_first_free: bool = False
) -> list[Row]:
    """Up to CANDIDATES users with runnable work, in round-robin order, with each one's head job.

    `lock_first_free`: only the first of them no other slot holds, with its row
    lock taken (as `try_lock_user` takes it); none when every one is held."""
    statement, n = (_FIRST_FREE, 1) if lock_first_free else (_CANDIDATES, CANDIDATES)
    return session.execute(statement, {"cap": cap, "n": n, "skip": [str(u) for u in skip]}).all()


def try_lock_user(*, session: Session, user_id: uuid.UUID, wait: bool = False) -> bool:
    """Take the user's row lock for this transaction; False when another slot holds it
    (with `wait`, queue for it instead, within the transaction's lock_timeout)."""
    statement = _WAIT_FOR_USER if wait else _LOCK_USER
    return session.execute(statement, {"user_id": user_id}).first() is not None


def _fingerprint(token_encrypted: bytes | memoryview) -> str:
    return token_fingerprint(decrypt_secret(bytes(token_encrypted)))  # bytea arrives as memoryview


# Another slot holds the user's row for a few milliseconds: try again, do not skip them.
BUSY = "busy"


@dataclass(frozen=True)
class _Claimed:
    claim: Claim
    more: bool  # the user has another runnable job, within the cap


def _try_user(
    session: Session, candidate: Row, cap: int, *, wait: bool, locked: bool = False
) -> _Claimed | Paused | str | None:
    """Claim the user's next job in this transaction; Paused when its token has no budget,
    BUSY when another slot is serving the user right now, None when nothing is claimable.
    `locked`: the candidate's row lock is held already (`_FIRST_FREE`).

    The lock is held from here to the commit: what runs under it is kept to the
    lock, one Redis reservation and one claiming statement.
    """
    user_id = candidate.user_id
    if not locked and not try_lock_user(session=session, user_id=user_id, wait=wait):
        return BUSY
    # Reserved for the head job the candidates query saw, before claiming, so a
    # claim never spends what the token does not have.
    try:
        fingerprint = _fingerprint(candidate.token_encrypted)
    except SecretUnreadable:
        # This process's SECRET_KEY lacks the key the token was stored with (a
        # rotation half rolled out). The user's jobs wait for a process that has it;
        # raised, it stopped every claim of this process, everyone's, for good.
        log.error("user %s: their TabPFN token cannot be decrypted here; skipped", user_id)
        return None
    calls = pacing.calls_for(candidate.job_type)
    reservation = pacing.new_reservation()
    until = pacing.reserve(fingerprint, calls, reservation=reservation)
    if until is not None:
        pause_user(session=session, user_id=user_id, until=until)
        return Paused(user_id=user_id, until=until)
    head = claim_head(session=session, user_id=user_id, cap=cap)
    if head is None:  # another slot took the last one, or the cap was reached meanwhile
        pacing.refund(fingerprint, calls, reservation=reservation)
        return None
    if head.type != candidate.job_type:  # the head changed under us: reserve for this one
        pacing.refund(fingerprint, calls, reservation=reservation)
        reservation = pacing.new_reservation()
        until = pacing.reserve(fingerprint, pacing.calls_for(head.type), reservation=reservation)
        if until is not None:
            raise _NoBudgetForHead(user_id=user_id, until=until)
    return _Claimed(claim=replace(head.claim, reservation=reservation), more=head.more)


class _NoBudgetForHead(Exception):
    """Rare: the head job changed type between the look and the claim, and the token
    has no budget for the new one; its claim is rolled back and the user paused."""

    def __init__(self, *, user_id: uuid.UUID, until: datetime) -> None:
        self.paused = Paused(user_id=user_id, until=until)


def claim_next(*, first_free: bool = False) -> Pick:
    """Claim the job that should run next, if any; committed when this returns.

    One transaction per look at the queue: the candidates, each one's lock, the
    claim. The run reads the job's rows afterwards, with no lock held.

    Many slots wake at once after a burst: a user another slot is serving is not
    skipped; when every candidate is busy, the slot queues on the first one's
    lock and claims the moment it is free, so every woken slot finds work while
    there is any.

    `first_free`, for a slot woken by a submit: the first look takes the first
    candidate no other slot holds, and its lock, in one statement (a round trip
    less on every submitted job's way to its run). `more` then says only whether
    that user has more runnable work; other users' work is not looked at. When
    no candidate is free, or the free one has nothing to claim, the usual looks follow.
    """
    cap = get_settings().max_running_per_user
    paused: list[Paused] = []
    skip: list[uuid.UUID] = []  # nothing claimable for them now (cap, budget, raced)
    for round_ in range(_MAX_ROUNDS):
        with session_scope() as session:
            locked = first_free and round_ == 0
            candidates = look_at_queue(session=session, cap=cap, skip=skip, lock_first_free=locked)
            if not candidates:
                if locked:
                    continue  # none free, or none at all: the usual look tells which
                return Pick(claim=None, paused=paused)
            busy: list[Row] = []
            try:
                for index, candidate in enumerate(candidates):
                    outcome = _try_user(session, candidate, cap, wait=False, locked=locked)
                    if isinstance(outcome, _Claimed):
                        session.commit()
                        more = outcome.more or index + 1 < len(candidates)
                        return Pick(claim=outcome.claim, paused=paused, more=more)
                    if outcome == BUSY:
                        busy.append(candidate)
                        continue
                    if isinstance(outcome, Paused):
                        paused.append(outcome)
                    skip.append(candidate.user_id)
                if not busy:
                    continue
                # Commit the pauses first: no other user's lock is held while this waits.
                session.commit()
                session.execute(_LOCK_WAIT)
                outcome = _try_user(session, busy[0], cap, wait=True)
            except _NoBudgetForHead as no_budget:
                session.rollback()
                pause_user(
                    session=session, user_id=no_budget.paused.user_id, until=no_budget.paused.until
                )
                paused.append(no_budget.paused)
                skip.append(no_budget.paused.user_id)
                continue
            except OperationalError as exc:
                if getattr(exc.orig, "pgcode", None) != _LOCK_NOT_AVAILABLE:
                    raise  # the database itself is in trouble: not this loop's to retry
                session.rollback()  # lock_timeout: the holder is slow; look again
                continue
            if isinstance(outcome, _Claimed):
                session.commit()
                return Pick(
                    claim=outcome.claim, paused=paused, more=outcome.more or len(candidates) > 1
                )
            if isinstance(outcome, Paused):
                paused.append(outcome)
            skip.append(busy[0].user_id)
    return Pick(claim=None, paused=paused)


def pause_user(*, session: Session, user_id: uuid.UUID, until: datetime) -> None:
    """Hold all of a user's jobs until `until` (the upstream's rate window reopens);
    never shortens a longer pause."""
    paused_until = on_database_clock(until)  # `until` is on this node's clock
    session.execute(
        update(User)
        .where(
            User.id == user_id,
            or_(User.upstream_paused_until.is_(None), User.upstream_paused_until < paused_until),
            # Not for a user with nothing left to hold back (they canceled it all
            # meanwhile: `cancel_job` lifts the pause, and must not lose this race).
            exists().where(Job.user_id == User.id, Job.status.in_([js.QUEUED, js.RUNNING])),
        )
        .values(upstream_paused_until=paused_until)
        .execution_options(synchronize_session=False)
    )


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
    return len(look_at_queue(session=session, cap=get_settings().max_running_per_user, skip=[]))
