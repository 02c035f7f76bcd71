"""A worker's first jobs, and an API's first submit, run their statements warm.

Each statement a job runs (the claim's, the load's, the stage and heartbeat
updates, the ending UPDATE) costs more the first time: SQLAlchemy builds and
compiles it once per process, and a new PostgreSQL backend reads the catalog
entries of the tables it touches once. Measured in one process against
PostgreSQL on this machine: the first job's claim, load and store took ~20 ms
of CPU, later ones ~7 ms. A fresh node's first burst pays that in every slot
at once (each compiles before any has cached the result), on the cores the
burst needs.

For a worker node, `warm_up_job_queries` runs each statement once per pooled
connection (compiled, and each backend warm) with arguments that match no row,
in transactions rolled back: nothing is written, no lock is kept, nothing is
published. For an API process, `warm_up_submit` does the same for a fit-predict submit.
"""

from __future__ import annotations

import contextlib
import uuid

from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from shared.core.db import get_sessionmaker
from shared.core.errors import ResultNotAvailable
from shared.jobs import states as js
from shared.jobs.lifecycle import (
    Claim,
    claim_head,
    heartbeat_many,
    set_stage,
    succeed_job,
)
from shared.jobs.repository import load_job_for_run
from shared.jobs.scheduling import look_at_queue, try_lock_user
from shared.jobs.submit import JsonTable, create_fit_predict_job, get_result_json
from shared.models import FittedModel, User


def _run_each_job_statement(session: Session) -> None:
    nobody = uuid.uuid4()
    nothing = Claim(job_id=uuid.uuid4(), attempt=1)
    look_at_queue(session=session, cap=1, skip=[])
    # cap 0 matches no user: the locking look runs without locking anyone's row.
    look_at_queue(session=session, cap=0, skip=[], lock_first_free=True)
    try_lock_user(session=session, user_id=nobody)
    claim_head(session=session, user_id=nobody, cap=1)
    with contextlib.suppress(NoResultFound):
        load_job_for_run(session=session, job_id=nothing.job_id)
    set_stage(session=session, claim=nothing, stage=js.STAGE_PREDICTING)
    heartbeat_many(session=session, claims=[nothing])
    # With a model: the ending statement that also inserts a fit's model.
    succeed_job(session=session, claim=nothing, result={}, model=_a_model(nobody), timings={})


def _throwaway_owner(session: Session) -> User:
    """A user row for what needs an owner; gone with the transaction's rollback."""
    owner = User(tabpfn_token_encrypted=b"warm-up", webhook_secret_encrypted=b"warm-up")
    session.add(owner)
    session.flush()
    return owner


def _a_model(user_id: uuid.UUID) -> FittedModel:
    return FittedModel(
        id=uuid.uuid4(),
        user_id=user_id,
        fit_job_id=uuid.uuid4(),
        task=js.CLASSIFICATION,
        options={},
        upstream_model_id="warm-up",
        columns=["x"],
        classes=[0, 1],
        n_rows=1,
        n_features=1,
    )


def warm_up_job_queries(connections: int) -> None:
    """Run every job statement on `connections` pooled connections (opening them), then
    roll back; the connections stay in the pool. Raises when the database is down."""
    sessions = [get_sessionmaker()() for _ in range(max(1, connections))]
    try:
        # Held all at once, so each is a connection of its own.
        for session in sessions:
            _run_each_job_statement(session)
    finally:
        for session in sessions:
            session.rollback()
            session.close()


def warm_up_submit() -> None:
    """An API process's first submit, run now and rolled back: the checks, the Parquet
    encodes, the job's INSERT and its data's COPY, and the result's read (what it
    saves is measured in api/warm_up.py)."""
    session = get_sessionmaker()()
    try:
        owner = _throwaway_owner(session)
        job = create_fit_predict_job(
            session=session,
            user=owner,
            task=js.CLASSIFICATION,
            train=JsonTable(X=[[0.0, "a"], [1.0, "b"]], y=[0, 1]),
            test=JsonTable(X=[[0.5, "a"]]),
            options={},
            output=None,
            quantiles=None,
            callback_url=None,
        )
        session.refresh(job)  # what the 202's body reads back (server defaults)
        with contextlib.suppress(ResultNotAvailable):  # as for any queued job
            get_result_json(session=session, user=owner, job_id=job.id)
    finally:
        session.rollback()
        session.close()
