"""Idempotency-Key (shared/jobs/idempotency.py `create_once`): the same key and body
return the first job; the same key with another body is a conflict."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from shared.core.errors import IdempotencyConflict
from shared.jobs.idempotency import create_once, fingerprint, fingerprint_v1
from shared.models import IdempotencyKey, Job, User
from tests.support.factories import make_job, make_user

BODY = {"task": "classification", "train": {"X": [[1, 2]], "y": [0]}}


class Submit:
    """create_once as a route calls it; counts the jobs it made and the hashes it took."""

    def __init__(self, session: Session) -> None:
        self.session, self.created, self.hashed = session, 0, 0

    def __call__(self, user: User, key: str | None, body: dict) -> tuple[Job, bool]:
        def request() -> tuple[str, dict]:
            self.hashed += 1
            return "/jobs/fit", body

        def create() -> Job:
            self.created += 1
            return make_job(session=self.session, user=user)

        return create_once(session=self.session, user=user, key=key, request=request, create=create)


def _jobs_of(session: Session, user: User) -> int:
    return session.scalar(select(func.count()).select_from(Job).where(Job.user_id == user.id))


def test_the_same_key_and_body_return_the_first_job(session: Session) -> None:
    user, submit = make_user(session=session), Submit(session)

    first, made = submit(user, "key-1", BODY)
    again, made_again = submit(user, "key-1", dict(BODY))

    assert made is True and made_again is False
    assert again.id == first.id
    assert submit.created == 1 and _jobs_of(session, user) == 1


def test_the_same_key_with_another_body_is_a_conflict(session: Session) -> None:
    user, submit = make_user(session=session), Submit(session)
    submit(user, "key-1", BODY)

    with pytest.raises(IdempotencyConflict):
        submit(user, "key-1", {**BODY, "task": "regression"})
    assert submit.created == 1 and _jobs_of(session, user) == 1


def test_without_a_key_every_submit_makes_a_job_and_hashes_nothing(session: Session) -> None:
    user, submit = make_user(session=session), Submit(session)

    first, _ = submit(user, None, BODY)
    second, made = submit(user, None, BODY)

    assert made is True and second.id != first.id
    assert submit.hashed == 0 and _jobs_of(session, user) == 2


def test_a_key_belongs_to_its_user(session: Session) -> None:
    alice, bob = make_user(session=session), make_user(session=session)
    submit = Submit(session)

    alices, _ = submit(alice, "shared-key", BODY)
    bobs, made = submit(bob, "shared-key", {**BODY, "task": "regression"})

    assert made is True and bobs.id != alices.id and bobs.user_id == bob.id


def test_a_key_stored_before_orjson_still_replays(session: Session) -> None:
    # Keys stored by the json-module digest (before this version) live a day: a retry
    # across the upgrade replays. Small floats and non-ASCII text are where the two differ.
    user, submit = make_user(session=session), Submit(session)
    body = {"task": "classification", "train": {"X": [[1e-05, "é"]], "y": ["ü"]}}
    assert fingerprint("/jobs/fit", body) != fingerprint_v1("/jobs/fit", body)
    first = make_job(session=session, user=user)
    session.add(
        IdempotencyKey(
            user_id=user.id,
            key="old",
            request_hash=fingerprint_v1("/jobs/fit", body),
            job_id=first.id,
        )
    )
    session.flush()

    again, made = submit(user, "old", body)
    assert made is False and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        submit(user, "old", {**body, "task": "regression"})
    assert submit.created == 0


def test_a_request_with_an_integer_beyond_64_bits_has_a_stable_digest(session: Session) -> None:
    # orjson refuses such integers; the json module's digest stands in, every time.
    user, submit = make_user(session=session), Submit(session)
    body = {**BODY, "options": {"random_state": 2**70}}
    assert fingerprint("/jobs/fit", body) == fingerprint("/jobs/fit", dict(body))
    first, _ = submit(user, "big", body)
    again, made = submit(user, "big", dict(body))
    assert made is False and again.id == first.id


def test_the_digest_ignores_key_order_and_spacing() -> None:
    one = {"task": "classification", "train": {"X": [[1.5, None]], "y": [0]}}
    other = {"train": {"y": [0], "X": [[1.5, None]]}, "task": "classification"}
    assert fingerprint("/jobs/fit", one) == fingerprint("/jobs/fit", other)
    assert fingerprint("/jobs/fit", one) != fingerprint("/jobs/fit-predict", one)


@pytest.mark.parametrize("winner_commits", [True, False])
def test_racing_requests_with_one_key_make_one_job(engine: Engine, winner_commits: bool) -> None:
    """Two sessions, as two API requests: the second's INSERT of the key waits for the
    first's transaction, then replays its job (or, if the first rolled back, keeps its own)."""
    with Session(engine) as setup:
        user_id = make_user(session=setup).id
        setup.commit()
    first, second = Session(engine), Session(engine)
    try:
        made_by: dict[str, int] = {"first": 0, "second": 0}

        def attempt(session: Session, name: str) -> tuple[Job, bool]:
            user = session.get(User, user_id)

            def create() -> Job:
                made_by[name] += 1
                return make_job(session=session, user=user)

            return create_once(
                session=session,
                user=user,
                key="racing",
                request=lambda: ("/jobs/fit", BODY),
                create=create,
            )

        winner, won = attempt(first, "first")
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(attempt, second, "second")
            time.sleep(0.5)
            assert not pending.done(), "the second request did not wait for the first's key"
            first.commit() if winner_commits else first.rollback()
            job, made = pending.result(timeout=10)
        second.commit()

        assert won is True and made_by == {"first": 1, "second": 1}
        if winner_commits:
            assert made is False and job.id == winner.id
        else:
            assert made is True and job.id != winner.id
        with Session(engine) as check:
            assert check.scalar(select(func.count()).where(Job.user_id == user_id)) == 1
            assert check.get(IdempotencyKey, (user_id, "racing")).job_id == job.id
    finally:
        first.close()
        second.close()
        with Session(engine) as cleanup:
            cleanup.delete(cleanup.get(User, user_id))  # its jobs and keys cascade
            cleanup.commit()


def test_a_key_older_than_its_ttl_is_forgotten_at_once_not_at_the_next_sweep(
    session: Session,
) -> None:
    """IDEMPOTENCY_TTL_S holds when the key is used, not only when the hourly retention
    sweep runs: a key past it makes a new job (with any body), and is kept again."""
    from datetime import timedelta

    from sqlalchemy import update

    from shared.core.config import get_settings

    user, submit = make_user(session=session), Submit(session)
    first, _ = submit(user, "key-1", BODY)
    past_ttl = timedelta(seconds=get_settings().idempotency_ttl_s + 60)
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.user_id == user.id)
        .values(created_at=func.now() - past_ttl)
    )
    session.expire_all()

    again, made = submit(user, "key-1", {**BODY, "task": "regression"})
    assert made is True and again.id != first.id
    replay, made = submit(user, "key-1", {**BODY, "task": "regression"})
    assert made is False and replay.id == again.id
    assert submit.created == 2 and _jobs_of(session, user) == 2
