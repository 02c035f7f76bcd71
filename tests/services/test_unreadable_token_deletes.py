"""Deleting a model or an account whose TabPFN token this process cannot decrypt (a
SECRET_KEY rotation under way): the rows go, the answer says the upstream copies
stay. It was a 500 after the rows were deleted: the client took the delete for
failed, and its retry met a 404 or a 401."""

from __future__ import annotations

from cryptography.fernet import Fernet
from sqlalchemy import select

from shared.accounts.deletion import delete_account
from shared.accounts.security import _fernet_key
from shared.core.db import session_scope
from shared.jobs import states as js
from shared.jobs.submit import delete_model
from shared.models import FittedModel, User
from tests.support.factories import make_job, make_user, new_model
from tests.support.inprocess import configured


def _user_with_a_lost_key_and_a_model() -> tuple[User, FittedModel]:
    with session_scope() as session:
        user = make_user(session=session)
        user.tabpfn_token_encrypted = Fernet(_fernet_key("a-dropped-key")).encrypt(b"tok")
        fit = make_job(session=session, user=user, type_=js.FIT, status=js.SUCCEEDED)
        model = new_model(fit)
        session.add(model)
    return user, model


def test_a_model_whose_token_cannot_be_read_is_deleted_and_says_so(services):
    with configured(services):
        user, model = _user_with_a_lost_key_and_a_model()
        assert delete_model(user=user, model_id=model.id) is False  # Upstream-Deleted: false
        with session_scope() as session:
            assert session.get(FittedModel, model.id) is None


def test_an_account_whose_token_cannot_be_read_is_deleted_and_says_so(services):
    with configured(services):
        user, _ = _user_with_a_lost_key_and_a_model()
        assert delete_account(user_id=user.id) is False
        with session_scope() as session:
            assert session.scalar(select(User.id).where(User.id == user.id)) is None
            assert session.scalar(select(FittedModel.id)) is None
