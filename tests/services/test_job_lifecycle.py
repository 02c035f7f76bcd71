"""Claiming a job and ending its run (shared/jobs/lifecycle.py), statement by
statement: one claim wins, the cap and FIFO hold, and a run that lost its claim
can change nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from shared.core.errors import NotFound, ResultExpired
from shared.jobs import states as js
from shared.jobs.lifecycle import (
    Claim,
    claim_head,
    fail_job,
    hand_back_runs_of,
    heartbeat,
    release_dead_run,
    set_stage,
    succeed_job,
    this_worker,
)
from shared.jobs.repository import purge_job_data
from shared.jobs.submit import get_result_json
from shared.models import FittedModel, Job, JobData
from tests.support.factories import make_job, make_user, new_model

OUTCOME = {"result": {"x": 1}, "model": None, "timings": None}


def _state(session: Session, job_id: uuid.UUID) -> tuple:
    return session.execute(
        select(Job.status, Job.stage, Job.attempts, Job.error_code).where(Job.id == job_id)
    ).one()


def claim_job(*, session: Session, job_id: uuid.UUID) -> Claim | None:
    """Claim the owner's next job (the scheduler holds the owner's lock); the claim only
    if it is the job named (these tests give each user one claimable job)."""
    owner = session.scalar(select(Job.user_id).where(Job.id == job_id))
    head = claim_head(session=session, user_id=owner, cap=10)
    if head is None:
        return None
    assert head.claim.job_id == job_id
    return head.claim


def _result(session: Session, job_id: uuid.UUID) -> dict | None:
    return session.scalar(select(JobData.result).where(JobData.job_id == job_id))


def test_one_claim_wins_and_a_duplicate_delivery_gets_none(session: Session) -> None:
    job = make_job(session=session, user=make_user(session=session))

    claim = claim_job(session=session, job_id=job.id)

    assert claim == Claim(job_id=job.id, attempt=1)
    assert claim_job(session=session, job_id=job.id) is None
    assert _state(session, job.id) == (js.RUNNING, js.STAGE_FITTING, 1, None)
    assert session.scalar(select(Job.worker).where(Job.id == job.id)) == this_worker()


def test_a_claim_enters_the_first_stage_of_its_type(session: Session) -> None:
    job = make_job(session=session, user=make_user(session=session), type_=js.PREDICT)
    claim_job(session=session, job_id=job.id)
    assert _state(session, job.id)[:2] == (js.RUNNING, js.STAGE_PREDICTING)


def test_a_job_that_is_not_queued_or_waits_out_a_backoff_is_not_claimed(session: Session) -> None:
    user = make_user(session=session)
    finished = make_job(session=session, user=user, status=js.SUCCEEDED)
    waiting = make_job(session=session, user=user)
    waiting.run_after = datetime.now(UTC) + timedelta(hours=1)
    session.flush()

    assert claim_job(session=session, job_id=finished.id) is None
    assert claim_job(session=session, job_id=waiting.id) is None
    assert _state(session, waiting.id) == (js.QUEUED, None, 0, None)


def test_a_run_with_a_wrong_attempt_is_refused_everywhere(session: Session) -> None:
    job = make_job(session=session, user=make_user(session=session))
    claim = claim_job(session=session, job_id=job.id)
    assert claim is not None
    wrong = Claim(job_id=job.id, attempt=claim.attempt + 1)

    assert heartbeat(session=session, claim=wrong) is False
    assert set_stage(session=session, claim=wrong, stage=js.STAGE_PREDICTING) is False
    assert (
        succeed_job(session=session, claim=wrong, result={"x": 1}, model=None, timings=None)
        is False
    )
    assert fail_job(session=session, claim=wrong, code="upstream_error", message="no") is False
    assert _state(session, job.id) == (js.RUNNING, js.STAGE_FITTING, 1, None)
    assert _result(session, job.id) is None

    assert succeed_job(session=session, claim=claim, **OUTCOME)
    assert _state(session, job.id) == (js.SUCCEEDED, None, 1, None)
    assert _result(session, job.id) == {"x": 1}


def test_the_end_of_a_fit_stores_its_model_in_the_same_statement_or_not_at_all(
    session: Session,
) -> None:
    job = make_job(session=session, user=make_user(session=session))
    claim = claim_job(session=session, job_id=job.id)
    assert claim is not None
    lost, kept = new_model(job), new_model(job)

    wrong = Claim(job_id=job.id, attempt=claim.attempt + 1)
    assert succeed_job(session=session, claim=wrong, result={}, model=lost, timings=None) is False
    assert session.get(FittedModel, lost.id) is None, "a lost claim inserts no model"

    assert succeed_job(session=session, claim=claim, result={"x": 1}, model=kept, timings=None)
    session.expire_all()
    stored = session.get(FittedModel, kept.id)
    assert stored is not None and stored.created_at is not None
    assert (stored.options, stored.columns, stored.classes) == (
        {"n_estimators": 4},
        ["a", "b"],
        ["no", "yes"],
    )
    assert (stored.user_id, stored.fit_job_id, stored.n_rows) == (job.user_id, job.id, 3)
    assert session.scalar(select(Job.model_id).where(Job.id == job.id)) == kept.id


def test_a_run_released_as_dead_cannot_end_the_next_run(session: Session) -> None:
    job = make_job(session=session, user=make_user(session=session))
    first = claim_job(session=session, job_id=job.id)
    assert first is not None

    # What the sweeper does once the first run's process is known to be gone.
    released = release_dead_run(
        session=session, job_id=job.id, holder=this_worker(), attempt=1, max_attempts=3
    )
    assert released == js.QUEUED
    second = claim_job(session=session, job_id=job.id)
    assert second == Claim(job_id=job.id, attempt=2)

    assert fail_job(session=session, claim=first, code="upstream_error", message="late") is False
    assert _state(session, job.id) == (js.RUNNING, js.STAGE_FITTING, 2, None)
    assert fail_job(session=session, claim=second, code="upstream_error", message="now")
    assert _state(session, job.id) == (js.FAILED, None, 2, "upstream_error")


def test_a_claim_takes_the_oldest_job_within_the_cap_and_says_what_remains(
    session: Session,
) -> None:
    user = make_user(session=session)
    first, second, third = (make_job(session=session, user=user) for _ in range(3))
    session.flush()
    order = sorted([first, second, third], key=lambda j: (j.created_at, j.id))

    head = claim_head(session=session, user_id=user.id, cap=2)
    assert head.claim.job_id == order[0].id and head.more, "two queued, one slot left"
    head = claim_head(session=session, user_id=user.id, cap=2)
    assert head.claim.job_id == order[1].id and not head.more, "the cap is reached now"
    assert claim_head(session=session, user_id=user.id, cap=2) is None
    assert _state(session, order[2].id)[0] == js.QUEUED


def test_a_shutdown_gives_back_every_run_of_its_process_and_only_those(session: Session) -> None:
    # Claimed here, with no lease taken yet: a claim that committed just before a cold
    # shutdown. It is given back untouched (not an attempt); another process's run stays.
    mine = make_job(session=session, user=make_user(session=session))
    theirs = make_job(session=session, user=make_user(session=session))
    claim_job(session=session, job_id=mine.id)
    claim_job(session=session, job_id=theirs.id)
    session.execute(update(Job).where(Job.id == theirs.id).values(worker="elsewhere:1"))

    assert hand_back_runs_of(session=session, worker=this_worker()) == [mine.id]
    assert _state(session, mine.id) == (js.QUEUED, None, 0, None)
    assert _state(session, theirs.id) == (js.RUNNING, js.STAGE_FITTING, 1, None)
    assert hand_back_runs_of(session=session, worker=this_worker()) == []


def test_a_result_read_tells_an_expired_result_from_a_deleted_job(session: Session) -> None:
    """A submit's `?wait` answers the job alone when its result expired, and 404 when
    the job itself was deleted while it waited (it answered `succeeded`, no result)."""
    user = make_user(session=session)
    job = make_job(session=session, user=user)
    claim = claim_job(session=session, job_id=job.id)
    assert succeed_job(session=session, claim=claim, result={"y": [1]}, model=None, timings=None)
    assert get_result_json(session=session, user=user, job_id=job.id) == '{"y": [1]}'

    later = datetime.now(UTC) + timedelta(days=1)
    assert purge_job_data(session=session, finished_before=later) == 1
    with pytest.raises(ResultExpired, match="has expired"):
        get_result_json(session=session, user=user, job_id=job.id)

    session.execute(delete(JobData).where(JobData.job_id == job.id))
    session.execute(delete(Job).where(Job.id == job.id))
    with pytest.raises(NotFound) as gone:
        get_result_json(session=session, user=user, job_id=job.id)
    assert not isinstance(gone.value, ResultExpired)
