"""A predict submit whose model is deleted while its test table is read: a 404
`model_not_found` and nothing stored, not a foreign-key violation (answered 503)."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from shared.core.errors import ModelNotFound
from shared.jobs import states as js
from shared.jobs import submit
from shared.models import FittedModel, Job
from tests.support.factories import make_job, make_user, new_model


def test_a_model_deleted_while_the_test_table_is_read_is_model_not_found(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = make_user(session=session)
    fit = make_job(session=session, user=user, type_=js.FIT, status=js.SUCCEEDED)
    model = new_model(fit, columns=["x"], n_features=1, classes=["a", "b"], n_rows=4)
    session.add(model)
    session.flush()
    read_table = submit._test_parquet

    def deleted_meanwhile(*args, **kwargs):
        # DELETE /models/{id} commits while the submit reads its (uploaded) table.
        session.execute(delete(FittedModel).where(FittedModel.id == model.id))
        return read_table(*args, **kwargs)

    monkeypatch.setattr(submit, "_test_parquet", deleted_meanwhile)
    with pytest.raises(ModelNotFound):
        submit.create_predict_job(
            session=session,
            user=user,
            model_id=model.id,
            test=submit.JsonTable(X=[[1.0]], columns=["x"]),
            output="labels",
            quantiles=None,
            callback_url=None,
        )
    jobs = select(func.count()).select_from(Job).where(Job.type == js.PREDICT)
    assert session.scalar(jobs.where(Job.user_id == user.id)) == 0
