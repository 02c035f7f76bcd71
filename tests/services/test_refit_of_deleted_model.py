"""A predict refits a model its upstream lost, and the model is deleted meanwhile: the
refit's new copy is deleted from the owner's TabPFN account and the job ends
`model_not_found`. The copy stayed there for good before, and the predict succeeded
for a model its owner had deleted."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
from sqlalchemy import delete

from shared.core.db import session_scope
from shared.core.errors import ModelNotFound
from shared.jobs import states as js
from shared.models import FittedModel
from tests.support.factories import make_job, make_user, new_model
from tests.support.inprocess import configured
from worker import runner


def _model_whose_training_data_is_kept(monkeypatch) -> FittedModel:
    """A fitted model in the database; its fit's training data read as a small table."""
    with session_scope() as session:
        user = make_user(session=session)
        fit = make_job(session=session, user=user, type_=js.FIT, status=js.SUCCEEDED)
        model = new_model(fit)
        session.add(model)
    train = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0], "y": ["no", "yes"]})
    monkeypatch.setattr(runner, "training_data", lambda **_: b"kept")
    monkeypatch.setattr(runner, "decode_table", lambda _: train)
    monkeypatch.setattr(runner, "split_train", lambda t: (t[["a", "b"]], t["y"]))
    return model


def test_a_model_deleted_during_its_refit_leaves_no_copy_upstream(services, monkeypatch):
    with configured(services):
        model = _model_whose_training_data_is_kept(monkeypatch)
        deleted_upstream: list[tuple[str, str]] = []
        monkeypatch.setattr(
            runner, "delete_upstream_model", lambda *args: deleted_upstream.append(args)
        )

        def fit_while_deleted(**_):
            # DELETE /models/{id} commits while the upstream fits the copy again.
            with session_scope() as session:
                session.execute(delete(FittedModel).where(FittedModel.id == model.id))
            return SimpleNamespace(upstream_model_id="the-new-copy", timings={})

        upstream = SimpleNamespace(pace=lambda calls: None, fit=fit_while_deleted)
        with pytest.raises(ModelNotFound, match="was deleted while this job ran"):
            runner._refit(upstream, model, "the-owners-token")
        assert deleted_upstream == [("the-owners-token", "the-new-copy")]


def test_a_refit_of_a_model_that_stays_points_it_at_the_new_copy(services, monkeypatch):
    with configured(services):
        model = _model_whose_training_data_is_kept(monkeypatch)
        fitted = SimpleNamespace(upstream_model_id="the-new-copy", timings={"s": 1})
        upstream = SimpleNamespace(pace=lambda calls: None, fit=lambda **_: fitted)
        assert runner._refit(upstream, model, "the-owners-token") == {"s": 1}
        with session_scope() as session:
            assert session.get(FittedModel, model.id).upstream_model_id == "the-new-copy"
