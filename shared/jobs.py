"""Creating and reading jobs: what the API does between parsing and responding."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pandas as pd
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import job_states as js
from shared.config import get_settings
from shared.errors import (
    JobAlreadyFinished,
    JobCanceled,
    ModelNotFound,
    NotFound,
    ResultNotAvailable,
    ValidationFailed,
)
from shared.job_lifecycle import cancel_job
from shared.limits import check_test_limits, check_train_limits
from shared.models import FittedModel, Job, JobData, User
from shared.payloads import (
    TARGET_COLUMN,
    align_columns,
    encode_table,
    labels_from_json,
    table_from_json,
)
from shared.security import decrypt_secret
from shared.tabpfn import load_client
from shared.upstream import delete_upstream_model
from shared.webhook_targets import check_target

CLASSIFIER_OUTPUTS = ("labels", "probabilities")
REGRESSOR_OUTPUTS = ("mean", "median", "quantiles")
DEFAULT_QUANTILES = [0.1, 0.5, 0.9]


def _check_options(task: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate TabPFN estimator options against the client's own config models."""
    models = load_client().api_models
    config = (
        models.ClassifierTabPFNConfig if task == js.CLASSIFICATION else models.RegressorTabPFNConfig
    )
    unknown = sorted(set(options) - set(config.model_fields))
    if unknown:
        raise ValidationFailed(
            f"Unknown option(s) {unknown} for {task}; known: {sorted(config.model_fields)}."
        )
    try:
        config.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationFailed(
            f"options.{'.'.join(map(str, first['loc']))}: {first['msg']}."
        ) from exc
    return options


def _check_output(task: str, output: str | None, quantiles: Sequence[float] | None) -> dict:
    allowed = CLASSIFIER_OUTPUTS if task == js.CLASSIFICATION else REGRESSOR_OUTPUTS
    output = output or allowed[0]
    if output not in allowed:
        raise ValidationFailed(
            f"output {output!r} is not available for {task}; use one of {allowed}."
        )
    if output != "quantiles":
        return {"output": output}
    quantiles = list(quantiles or DEFAULT_QUANTILES)
    if not quantiles or any(not 0 < q < 1 for q in quantiles):
        raise ValidationFailed("quantiles must be numbers strictly between 0 and 1.")
    return {"output": output, "quantiles": quantiles}


def _check_task(task: str) -> None:
    if task not in (js.CLASSIFICATION, js.REGRESSION):
        raise ValidationFailed(f"task must be 'classification' or 'regression', not {task!r}.")


def _train_table(task: str, X: Sequence[Any], y: Sequence[Any], columns: Sequence[str] | None):
    table = table_from_json(X, columns, name="train")
    labels = labels_from_json(y, task=task, n_rows=len(table))
    check_train_limits(table, n_classes=labels.nunique() if task == js.CLASSIFICATION else None)
    table[TARGET_COLUMN] = labels
    return table


def _test_table(X: Sequence[Any], columns: Sequence[str] | None, model_columns: list[str]):
    table = table_from_json(X, columns, name="test")
    check_test_limits(table)
    named = columns is not None or isinstance(X[0], dict)
    return align_columns(table, model_columns, named=named)


def _new_job(
    *,
    session: Session,
    user: User,
    type_: str,
    task: str,
    params: dict,
    callback_url: str | None,
    model_id: uuid.UUID | None,
    train: pd.DataFrame | None,
    test: pd.DataFrame | None,
) -> Job:
    if callback_url is not None:
        check_target(callback_url, allow_private=get_settings().webhook_allow_private_targets)
    job = Job(
        id=uuid.uuid4(),
        user_id=user.id,
        type=type_,
        status=js.QUEUED,
        task=task,
        params=params,
        callback_url=callback_url,
        model_id=model_id,
        attempts=0,
    )
    train_bytes = encode_table(train) if train is not None else None
    test_bytes = encode_table(test) if test is not None else None
    session.add(job)
    session.add(
        JobData(
            job_id=job.id,
            train_parquet=train_bytes,
            test_parquet=test_bytes,
            size_bytes=len(train_bytes or b"") + len(test_bytes or b""),
        )
    )
    session.flush()
    return job


def create_fit_job(
    *,
    session: Session,
    user: User,
    task: str,
    X: Sequence[Any],
    y: Sequence[Any],
    columns: Sequence[str] | None,
    options: dict[str, Any],
    callback_url: str | None,
) -> Job:
    _check_task(task)
    params = {"options": _check_options(task, options)}
    train = _train_table(task, X, y, columns)
    return _new_job(
        session=session,
        user=user,
        type_=js.FIT,
        task=task,
        params=params,
        callback_url=callback_url,
        model_id=None,
        train=train,
        test=None,
    )


def create_predict_job(
    *,
    session: Session,
    user: User,
    model_id: uuid.UUID,
    X: Sequence[Any],
    columns: Sequence[str] | None,
    output: str | None,
    quantiles: Sequence[float] | None,
    callback_url: str | None,
) -> Job:
    model = get_model(session=session, user=user, model_id=model_id)
    params = _check_output(model.task, output, quantiles)
    test = _test_table(X, columns, model.columns)
    return _new_job(
        session=session,
        user=user,
        type_=js.PREDICT,
        task=model.task,
        params=params,
        callback_url=callback_url,
        model_id=model.id,
        train=None,
        test=test,
    )


def create_fit_predict_job(
    *,
    session: Session,
    user: User,
    task: str,
    X: Sequence[Any],
    y: Sequence[Any],
    columns: Sequence[str] | None,
    test_X: Sequence[Any],
    test_columns: Sequence[str] | None,
    options: dict[str, Any],
    output: str | None,
    quantiles: Sequence[float] | None,
    callback_url: str | None,
) -> Job:
    _check_task(task)
    params = {"options": _check_options(task, options), **_check_output(task, output, quantiles)}
    train = _train_table(task, X, y, columns)
    train_columns = [c for c in train.columns if c != TARGET_COLUMN]
    test = _test_table(test_X, test_columns, train_columns)
    return _new_job(
        session=session,
        user=user,
        type_=js.FIT_PREDICT,
        task=task,
        params=params,
        callback_url=callback_url,
        model_id=None,
        train=train,
        test=test,
    )


def get_job(*, session: Session, user: User, job_id: uuid.UUID) -> Job:
    """The caller's job; another user's job is as absent as a missing one."""
    job = session.get(Job, job_id)
    if job is None or job.user_id != user.id:
        raise NotFound(f"No job {job_id}.")
    return job


def list_jobs(
    *,
    session: Session,
    user: User,
    limit: int,
    before: uuid.UUID | None,
    status: str | None,
    type_: str | None,
) -> list[Job]:
    """The caller's jobs, newest first; `before` is the last id of the previous page."""
    query = select(Job).where(Job.user_id == user.id)
    if status:
        query = query.where(Job.status == status)
    if type_:
        query = query.where(Job.type == type_)
    if before is not None:
        anchor = get_job(session=session, user=user, job_id=before)
        query = query.where(
            (Job.created_at < anchor.created_at)
            | ((Job.created_at == anchor.created_at) & (Job.id < anchor.id))
        )
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list(session.scalars(query))


def cancel(*, session: Session, user: User, job_id: uuid.UUID) -> Job:
    job = get_job(session=session, user=user, job_id=job_id)
    if not cancel_job(session=session, job_id=job.id):
        raise JobAlreadyFinished(
            f"Job {job_id} has already finished ({job.status}).", job_status=job.status
        )
    session.refresh(job)
    return job


def get_result(*, session: Session, user: User, job_id: uuid.UUID) -> dict[str, Any]:
    job = get_job(session=session, user=user, job_id=job_id)
    data = session.get(JobData, job.id)
    if job.status != js.SUCCEEDED or data is None or data.result is None:
        if job.status == js.SUCCEEDED:
            raise NotFound(f"The result of job {job_id} has expired and was deleted.")
        if job.status == js.CANCELED:
            raise JobCanceled(f"Job {job_id} was canceled; it has no result.")
        raise ResultNotAvailable(
            f"Job {job_id} is {job.status}; its result is available once it has succeeded.",
            job_status=job.status,
        )
    return data.result


def get_model(*, session: Session, user: User, model_id: uuid.UUID) -> FittedModel:
    model = session.get(FittedModel, model_id)
    if model is None or model.user_id != user.id:
        raise ModelNotFound(f"No model {model_id}.")
    return model


def delete_model(*, session: Session, user: User, model_id: uuid.UUID) -> bool:
    """Delete the model here and, best effort, in the user's TabPFN account.

    Returns whether the upstream copy is gone too. Jobs that used the model keep
    their results; predicting with it is `model_not_found` from now on.
    """
    model = get_model(session=session, user=user, model_id=model_id)
    upstream_deleted = delete_upstream_model(
        decrypt_secret(user.tabpfn_token_encrypted), model.upstream_model_id
    )
    session.delete(model)
    return upstream_deleted


def list_models(*, session: Session, user: User) -> list[FittedModel]:
    query = (
        select(FittedModel)
        .where(FittedModel.user_id == user.id)
        .order_by(FittedModel.created_at.desc())
    )
    return list(session.scalars(query))
