"""A request authenticated just before its account was deleted (DELETE /auth/me): the
row it then writes names a user that is no more. It is answered as its key now
is, 401 `unauthorized` with nothing stored, not 503 as a database failure. A row
naming a job deleted meanwhile (DELETE /jobs/{id}) is that job's 404."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import _integrity_error, install_error_handlers
from shared.accounts import users
from shared.core.errors import Unauthorized
from shared.jobs import submit
from shared.models import Job, JobData, User, WebhookAttempt
from tests.support.factories import make_user


def _answer(exc: IntegrityError) -> tuple[int, str]:
    response = asyncio.run(_integrity_error(None, exc))  # type: ignore[arg-type]
    return response.status_code, json.loads(response.body)["code"]


def test_a_job_submitted_by_an_account_deleted_meanwhile_is_401_and_not_stored(
    session: Session,
) -> None:
    user = make_user(session=session)
    # DELETE /auth/me commits between this request's authentication and its insert.
    session.execute(delete(User).where(User.id == user.id))
    with pytest.raises(IntegrityError) as refused, session.begin_nested():
        submit.create_fit_job(
            session=session,
            user=user,
            task="classification",
            train=submit.JsonTable(X=[[1.0], [2.0]], y=["a", "b"]),
            options={},
            callback_url=None,
        )
    assert _answer(refused.value) == (401, "unauthorized")
    assert session.scalar(select(func.count()).where(Job.user_id == user.id)) == 0


def test_a_row_for_a_job_deleted_meanwhile_is_that_jobs_404(session: Session) -> None:
    # A webhook redelivery racing DELETE /jobs/{id}: its delivery names the gone job.
    with pytest.raises(IntegrityError) as refused, session.begin_nested():
        session.add(JobData(job_id=uuid.uuid4()))
        session.flush()
    assert _answer(refused.value) == (404, "not_found")


def test_another_foreign_key_refusal_stays_a_503(session: Session) -> None:
    with pytest.raises(IntegrityError) as refused, session.begin_nested():
        session.add(WebhookAttempt(delivery_id=uuid.uuid4(), latency_ms=1))
        session.flush()
    assert _answer(refused.value) == (503, "service_unavailable")


def test_the_api_answers_integrity_errors_with_it() -> None:
    app = FastAPI()
    install_error_handlers(app)
    assert app.exception_handlers[IntegrityError] is _integrity_error


def test_rotating_the_webhook_secret_of_an_account_deleted_meanwhile_is_401(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(users, "encrypt_secret", str.encode)  # no SECRET_KEY in this process
    user = make_user(session=session)
    assert users.rotate_webhook_secret(session=session, user=user).startswith("whsec_")
    session.execute(delete(User).where(User.id == user.id))
    # Was a StaleDataError (the ORM's flush matched no row): a 500.
    with pytest.raises(Unauthorized):
        users.rotate_webhook_secret(session=session, user=user)
