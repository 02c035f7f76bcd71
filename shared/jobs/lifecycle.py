"""State transitions of a job, each one atomic in Postgres.

A transition is a single UPDATE guarded by the state it expects, so two
deliveries of one job id cannot both claim it, and a worker that lost its
claim (the sweeper re-queued the job, or the user canceled it) cannot
overwrite a newer run's outcome. A claim is identified by its attempt number.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, TextClause, bindparam, func, text, tuple_, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from shared.core.db import on_database_clock
from shared.core.errors import WorkerLost
from shared.jobs import states as js
from shared.jobs.events import FINAL_FIELDS, job_changed
from shared.models import FittedModel, Job, JobData
from shared.webhooks.events import record_job_event

# Why a queued job has a run_after (GET /jobs/{id} shows it as `waiting`).
WAIT_RETRY_BACKOFF = "retry_backoff"
WAIT_UPSTREAM_RATE_LIMIT = "upstream_rate_limit"


@dataclass(frozen=True)
class Claim:
    job_id: uuid.UUID
    attempt: int
    # The name of the job's calls in its token's budget (shared.upstream.pacing), so
    # the run can move a later call's entry to when it is made. Not part of the
    # claim's identity.
    reservation: str | None = field(default=None, compare=False)


# What an UPDATE that ends a job returns (for `job_ended`): the fields its waiters
# are sent, and whether it has a webhook to record.
ENDED_FIELDS = (*FINAL_FIELDS, Job.callback_url)


def this_worker() -> str:
    """How a claim names the process that holds it: "<host>:<pid>:<start>:<pidns>", the
    start being the process's start time in clock ticks after boot and pidns its pid
    namespace's inode (Linux; "<host>:<pid>" elsewhere).

    With the pid alone, a container restarted with its hostname gave its new
    processes the dead ones' small pids: the dead holder read as alive, and its
    jobs waited for the lease instead of running again within seconds. The
    namespace keeps nodes that share a hostname but not their pids (host
    networking, a fixed `hostname:`) from judging each other's processes.
    """
    global _this_worker
    pid = os.getpid()
    if _this_worker is None or _this_worker[0] != pid:  # once per process (a fork's own)
        start, namespace = process_start(pid), pid_namespace()
        holder = f"{socket.gethostname()}:{pid}"
        if start is not None and namespace is not None:
            holder = f"{holder}:{start}:{namespace}"
        _this_worker = (pid, holder)
    return _this_worker[1]


def pid_namespace() -> int | None:
    """This process's pid namespace (the inode of /proc/self/ns/pid); None if unknown."""
    try:
        return int(os.readlink("/proc/self/ns/pid").partition("[")[2].rstrip("]"))
    except (OSError, ValueError):
        return None


_this_worker: tuple[int, str] | None = None


def process_start(pid: int) -> int | None:
    """When a process of this host started (clock ticks after boot); None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def parse_holder(holder: str | None) -> tuple[str, int, int | None, int | None] | None:
    """(host, pid, start, pid namespace) of a claim's holder; "<host>:<pid>" (a release
    before these were recorded, or not Linux) gives None for both. None for anything else."""
    host, _, rest = (holder or "").partition(":")
    fields = rest.split(":")
    if not host or len(fields) not in (1, 3) or not all(f.isdigit() for f in fields):
        return None
    if len(fields) == 1:
        return host, int(fields[0]), None, None
    return host, int(fields[0]), int(fields[1]), int(fields[2])


def worker_lost(max_attempts: int) -> dict[str, Any]:
    """The values that fail a job whose runs kept losing their worker."""
    return {
        "status": js.FAILED,
        "stage": None,
        "finished_at": func.now(),
        "error_code": WorkerLost.code,
        "error_message": f"The job's worker stopped on each of its {max_attempts} attempts.",
    }


# The guard of every write a run makes: the job is still running this claim's attempt.
# Bind parameters, whose values `_claimed` gives: statements built once use it as is.
_OWNED = (
    (Job.id == bindparam("job_id"))
    & (Job.status == js.RUNNING)
    & (Job.attempts == bindparam("attempt"))
)


def _claimed(claim: Claim) -> dict[str, Any]:
    return {"job_id": claim.job_id, "attempt": claim.attempt}


# A user's next job, claimed in one statement under the user's row lock (taken
# by the caller, shared.jobs.scheduling): the oldest runnable queued job, only
# while fewer than :cap of the user's jobs run. Every subquery reads a snapshot
# taken after the lock was granted, so two slots never both see room under the
# cap. It enters the job's first upstream stage (reading its data takes
# milliseconds, not worth a transaction of its own to report), marks the user
# served now (round-robin order), and says whether the user has another job a
# free slot could claim (`more`).
_CLAIM_HEAD = text(
    """
    WITH running AS (
        SELECT count(*) AS n FROM jobs WHERE user_id = :user_id AND status = 'running'
    ), head AS (
        SELECT j.id FROM jobs j
        WHERE j.user_id = :user_id AND j.status = 'queued'
          AND (j.run_after IS NULL OR j.run_after <= now())
          AND (SELECT n FROM running) < :cap
        ORDER BY j.created_at, j.id
        LIMIT 1
    ), claimed AS (
        UPDATE jobs SET status = 'running',
            stage = CASE WHEN jobs.type = :predict THEN :predicting ELSE :fitting END,
            attempts = jobs.attempts + 1, started_at = now(), heartbeat_at = now(),
            run_after = NULL, wait_reason = NULL, worker = :worker, updated_at = now()
        FROM head WHERE jobs.id = head.id AND jobs.status = 'queued'
        RETURNING jobs.id, jobs.type, jobs.attempts
    ), served AS (
        UPDATE users SET last_served_at = clock_timestamp()
        WHERE id = :user_id AND EXISTS (SELECT 1 FROM claimed)
    )
    SELECT c.id, c.type, c.attempts,
        (SELECT n FROM running) + 1 < :cap
        AND EXISTS (SELECT 1 FROM jobs q
                    WHERE q.user_id = :user_id AND q.status = 'queued' AND q.id <> c.id
                      AND (q.run_after IS NULL OR q.run_after <= now())) AS more
    FROM claimed c
    """
)


@dataclass(frozen=True)
class HeadClaim:
    claim: Claim
    type: str
    more: bool  # the user has another runnable job, within the cap


def claim_head(*, session: Session, user_id: uuid.UUID, cap: int) -> HeadClaim | None:
    """Claim the user's next job (FIFO, within the cap); None when none can run now.

    The caller holds the user's row lock and decides durability: the
    scheduler commits a claim without waiting for its WAL flush.
    """
    row = session.execute(
        _CLAIM_HEAD,
        {
            "user_id": user_id,
            "cap": cap,
            "worker": this_worker(),
            "predict": js.PREDICT,
            "predicting": js.STAGE_PREDICTING,
            "fitting": js.STAGE_FITTING,
        },
    ).first()
    if row is None:
        return None
    job_changed(session, row.id, js.RUNNING)
    return HeadClaim(claim=Claim(job_id=row.id, attempt=row.attempts), type=row.type, more=row.more)


def job_ended(session: Session, ended: Row | None) -> bool:
    """What every end of a job does in its transaction: the webhook event, the wake-up.

    `ended` is the row the ending UPDATE returned with ENDED_FIELDS (None: nothing
    was updated). Every way a job ends goes through here, the sweeper's included.
    """
    if ended is None:
        return False
    final = ended._asdict()
    if final.pop("callback_url"):
        record_job_event(session=session, job_id=ended.id)
    job_changed(session, ended.id, ended.status, final=final)
    return True


def release_dead_run(
    *, session: Session, job_id: uuid.UUID, holder: str, attempt: int, max_attempts: int
) -> str | None:
    """End a run whose process is known to be dead, as the sweeper would after its lease.

    The job is queued again, or failed with `worker_lost` once its attempts are
    spent. Guarded by the dead run's holder and attempt, so a run that is alive
    (or a newer one) is never touched. The job's new status, or None.
    """
    dead = (
        (Job.id == job_id)
        & (Job.status == js.RUNNING)
        & (Job.attempts == attempt)
        & (Job.worker == holder)
    )
    if attempt >= max_attempts:
        ended = session.execute(
            update(Job).where(dead).values(**worker_lost(max_attempts)).returning(*ENDED_FIELDS)
        ).one_or_none()
        return js.FAILED if job_ended(session, ended) else None
    released = session.execute(
        update(Job).where(dead).values(status=js.QUEUED, stage=None, run_after=None)
    )
    if released.rowcount != 1:
        return None
    job_changed(session, job_id, js.QUEUED)
    return js.QUEUED


def heartbeat(*, session: Session, claim: Claim) -> bool:
    """Renew the claim's lease; False once the claim is lost."""
    result = session.execute(
        update(Job).where(_OWNED).values(heartbeat_at=func.now()), _claimed(claim)
    )
    return result.rowcount == 1


def heartbeat_many(*, session: Session, claims: list[Claim]) -> set[uuid.UUID]:
    """Renew many claims' leases in one statement; the job ids whose claims are still held."""
    if not claims:
        return set()
    kept = session.scalars(
        update(Job)
        .where(
            Job.status == js.RUNNING,
            tuple_(Job.id, Job.attempts).in_([(c.job_id, c.attempt) for c in claims]),
        )
        .values(heartbeat_at=func.now())
        .returning(Job.id)
    ).all()
    return set(kept)


# Built once, as the store's statement is (below): a fit-predict reports a stage per job.
_SET_STAGE = update(Job).where(_OWNED).values(stage=bindparam("stage"), heartbeat_at=func.now())


def set_stage(*, session: Session, claim: Claim, stage: str) -> bool:
    result = session.execute(_SET_STAGE, _claimed(claim) | {"stage": stage})
    if result.rowcount != 1:
        return False
    job_changed(session, claim.job_id, js.RUNNING)
    return True


# Every column of a model row but those PostgreSQL fills (created_at): the model is
# stored as the run built it, its id included (no ORM flush applies Python defaults).
_MODEL_COLUMNS = [c for c in FittedModel.__table__.columns if c.server_default is None]


def _succeed_statement(*, with_model: bool) -> TextClause:
    """The job's end, its result and (for a fit) its model's row, in one statement.

    Built once, as SQL with typed bind parameters: composed per job with
    SQLAlchemy's constructs (a CTE over the ending UPDATE's RETURNING, a literal
    per model column), it cost the worker more CPU than PostgreSQL spent running
    it. A lost claim matches no row: nothing is stored, no model inserted.
    """
    returned = ", ".join(column.key for column in ENDED_FIELDS)
    dialect = postgresql.dialect()
    modelled = ""
    if with_model:
        names = ", ".join(c.name for c in _MODEL_COLUMNS)
        values = ", ".join(
            f"CAST(:model_{c.key} AS {c.type.compile(dialect)})" for c in _MODEL_COLUMNS
        )
        modelled = f"""
        , modelled AS (
            INSERT INTO fitted_models ({names})
            SELECT {values} WHERE EXISTS (SELECT 1 FROM ended)
        )"""
    # A fit records the model it made; a predict keeps the one it predicted with.
    statement = text(
        f"""
        WITH ended AS (
            UPDATE jobs SET status = :succeeded, stage = NULL, finished_at = now(),
                updated_at = now(), upstream_timings = :timings,
                error_code = NULL, error_message = NULL,
                model_id = coalesce(CAST(:new_model_id AS uuid), model_id)
            WHERE id = :job_id AND status = :running AND attempts = :attempt  -- _OWNED
            RETURNING {returned}
        ), stored AS (
            UPDATE job_data SET result = :result FROM ended WHERE job_data.job_id = ended.id
        ){modelled}
        SELECT {returned} FROM ended
        """
    ).bindparams(
        bindparam("succeeded", js.SUCCEEDED),
        bindparam("running", js.RUNNING),
        bindparam("job_id", type_=Job.id.type),
        bindparam("new_model_id", type_=Job.model_id.type),
        bindparam("timings", type_=Job.upstream_timings.type),
        bindparam("result", type_=JobData.result.type),
        *(bindparam(f"model_{c.key}", type_=c.type) for c in _MODEL_COLUMNS if with_model),
    )
    return statement.columns(*ENDED_FIELDS)


_SUCCEED = _succeed_statement(with_model=False)
_SUCCEED_WITH_MODEL = _succeed_statement(with_model=True)


def succeed_job(
    *,
    session: Session,
    claim: Claim,
    result: dict[str, Any],
    model: FittedModel | None,
    timings: dict[str, Any] | None,
) -> bool:
    """Record the outcome, and the model a fit made; False (nothing written) if the
    claim was lost."""
    params: dict[str, Any] = _claimed(claim) | {
        "timings": timings,
        "result": result,
        "new_model_id": model.id if model is not None else None,
    }
    if model is not None:
        params |= {f"model_{c.key}": getattr(model, c.key) for c in _MODEL_COLUMNS}
    statement = _SUCCEED if model is None else _SUCCEED_WITH_MODEL
    return job_ended(session, session.execute(statement, params).one_or_none())


def fail_job(*, session: Session, claim: Claim, code: str, message: str) -> bool:
    updated = session.execute(
        update(Job)
        .where(_OWNED)
        .values(
            status=js.FAILED,
            stage=None,
            finished_at=func.now(),
            error_code=code,
            error_message=message,
        )
        .returning(*ENDED_FIELDS),
        _claimed(claim),
    ).one_or_none()
    return job_ended(session, updated)


def requeue_job(*, session: Session, claim: Claim, code: str, message: str, delay_s: float) -> bool:
    """Hand a job back after a transient fault, to run again after `delay_s`."""
    updated = session.execute(
        update(Job)
        .where(_OWNED)
        .values(
            status=js.QUEUED,
            stage=None,
            error_code=code,
            error_message=message,
            run_after=func.now() + timedelta(seconds=delay_s),  # on the database's clock
            wait_reason=WAIT_RETRY_BACKOFF,
        ),
        _claimed(claim),
    )
    if updated.rowcount != 1:
        return False
    job_changed(session, claim.job_id, js.QUEUED)
    return True


def _give_back(claim: Claim, session: Session, **values: Any) -> bool:
    """Queue a claimed job again without counting its attempt (a wait, not a failure)."""
    updated = session.execute(
        update(Job)
        .where(_OWNED)
        .values(status=js.QUEUED, stage=None, attempts=Job.attempts - 1, **values),
        _claimed(claim),
    )
    if updated.rowcount != 1:
        return False
    job_changed(session, claim.job_id, js.QUEUED)
    return True


def wait_for_window(*, session: Session, claim: Claim, until: datetime) -> bool:
    """Hand a job back until the upstream's rate window reopens.

    A wait, not a failure: the attempt the claim counted is given back, so a
    burst paced by the upstream never spends a job's MAX_ATTEMPTS.
    """
    return _give_back(
        claim, session, run_after=on_database_clock(until), wait_reason=WAIT_UPSTREAM_RATE_LIMIT
    )


def hand_back_runs_of(*, session: Session, worker: str) -> list[uuid.UUID]:
    """Give every job that `worker` (this_worker()) runs back to the queue
    untouched (the process is shutting down): not an attempt; the jobs given back.

    By the claims' holder in the rows, not by the process's leases: a claim committed
    a moment before the shutdown, whose lease was not yet taken, is given back too
    (it was left running until the sweeper's lease timeout)."""
    handed = session.scalars(
        update(Job)
        .where(Job.status == js.RUNNING, Job.worker == worker)
        .values(status=js.QUEUED, stage=None, attempts=Job.attempts - 1, run_after=None)
        .returning(Job.id)
    ).all()
    for job_id in handed:
        job_changed(session, job_id, js.QUEUED)
    return list(handed)


def canceled(message: str) -> dict[str, Any]:
    """The values that end an unfinished job canceled, with `message` saying why."""
    return {
        "status": js.CANCELED,
        "stage": None,
        "finished_at": func.now(),
        "error_code": "canceled",
        "error_message": message,
    }


def cancel_job(*, session: Session, job_id: uuid.UUID) -> bool:
    """Cancel a job that has not finished; False if it already had."""
    updated = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([js.QUEUED, js.RUNNING]))
        .values(**canceled("The job was canceled by its owner."))
        .returning(*ENDED_FIELDS)
    ).one_or_none()
    if updated is not None:
        session.execute(_UNPAUSE_IDLE_USER, {"job_id": job_id})
    return job_ended(session, updated)


# A pause holds back the user's queued work until their token's window has room for
# its head job. Once they cancel everything it held back, it holds back nothing and
# must go: kept, a lone prediction sent next waited out a fit window (up to an hour)
# with the prediction budget free. A running job's in-place wait keeps it. The next
# claim reserves for whatever is queued then, and pauses again if that has no room.
_UNPAUSE_IDLE_USER = text(
    """
    UPDATE users u SET upstream_paused_until = NULL
    WHERE u.id = (SELECT user_id FROM jobs WHERE id = :job_id)
      AND u.upstream_paused_until > now()
      AND NOT EXISTS (SELECT FROM jobs j WHERE j.user_id = u.id
                      AND j.status IN ('queued', 'running'))
    """
)
