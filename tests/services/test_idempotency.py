"""Idempotency-Key (shared/jobs/idempotency.py `create_once`): the same key and body
return the first job; the same key with another body is a conflict."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.core.errors import IdempotencyConflict
from shared.jobs.idempotency import create_once, fingerprint
from shared.models import Job, User
from tests.support.factories import make_job, make_user

BODY = {"task": "classification", "train": {"X": [[1, 2]], "y": [0]}}


class Submit:
    """create_once as a route calls it; counts the jobs it made and the hashes it took."""

    def __init__(self, session: Session) -> None:
        self.session, self.created, self.hashed = session, 0, 0

    def __call__(self, user: User, key: str | None, body: dict) -> tuple[Job, bool]:
        def request_hash() -> str:
            self.hashed += 1
            return fingerprint("/jobs/fit", body)

        def create() -> Job:
            self.created += 1
            return make_job(session=self.session, user=user)

        return create_once(
            session=self.session, user=user, key=key, request_hash=request_hash, create=create
        )


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
