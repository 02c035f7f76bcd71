"""Creating and reading jobs: what the API does between parsing and responding."""

from __future__ import annotations

import ipaddress
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from pandas.api.types import is_numeric_dtype
from pydantic import ValidationError
from sqlalchemy import Text, cast, delete, select
from sqlalchemy.orm import Session

from shared.accounts.security import decrypt_or_none
from shared.core.after_commit import after_commit
from shared.core.config import get_settings
from shared.core.db import session_scope
from shared.core.errors import (
    JobAlreadyFinished,
    JobCanceled,
    ModelNotFound,
    NotFound,
    ResultExpired,
    ResultNotAvailable,
    ValidationFailed,
)
from shared.jobs import states as js
from shared.jobs.data import insert_job_data
from shared.jobs.job_metadata import check_metadata
from shared.jobs.lifecycle import cancel_job
from shared.jobs.list_cursor import ListAnchor
from shared.models import FittedModel, Job, JobData, User
from shared.queue import enqueue_job
from shared.tables.limits import check_classes, check_test_shape, check_train_shape
from shared.tables.payloads import (
    NUL,
    TARGET_COLUMN,
    align_columns,
    as_fitted_numbers,
    encode_table,
    holds_nul,
    labels_from_json,
    names_columns,
    table_from_json,
)
from shared.tables.table_ingest import Target, ingest_upload
from shared.upstream.account import delete_upstream_model, upstream_limits
from shared.upstream.client import load_client
from shared.webhooks.targets import CALLBACK_LOOKUP_TIMEOUT_S, check_target

CLASSIFIER_OUTPUTS = ("labels", "probabilities")
REGRESSOR_OUTPUTS = ("mean", "median", "quantiles")
DEFAULT_QUANTILES = [0.1, 0.5, 0.9]

log = logging.getLogger(__name__)


# Options are stored as JSON (jobs.params) before they are sent upstream. TabPFN's
# own are a few levels deep (inference_config's lists of preprocessing configs);
# far deeper ones broke Python's JSON encoder on the way in (a 500).
MAX_OPTIONS_DEPTH = 32

MAX_RANDOM_STATE = 2**32 - 1  # numpy's RandomState seeds: 0 to 2**32 - 1


def _check_option_values(options: dict[str, Any]) -> None:
    """What JSON storage takes: finite numbers, text without NUL, MAX_OPTIONS_DEPTH levels.

    PostgreSQL's JSON has no NaN or Infinity (which Python's JSON reads) and no
    NUL character, so the row could not be written (a 503 that no retry
    mended): refused here, naming the option. A loop, not a recursion: the
    nesting is what is checked.
    """
    pending: list[tuple[str, Any, int]] = [("options", options, 1)]
    while pending:
        where, value, depth = pending.pop()
        if depth > MAX_OPTIONS_DEPTH:
            raise ValidationFailed(f"options nest more than {MAX_OPTIONS_DEPTH} levels deep.")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationFailed(f"{where} is {value}; option values must be finite numbers.")
        if isinstance(value, str) and NUL in value:
            raise holds_nul(where)
        if isinstance(value, dict):
            if any(NUL in key for key in value):
                raise holds_nul(f"a key of {where}")
            pending.extend((f"{where}.{key}", item, depth + 1) for key, item in value.items())
        elif isinstance(value, list):
            pending.extend((f"{where}[{i}]", item, depth + 1) for i, item in enumerate(value))


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
    _check_option_values(options)
    try:
        validated = config.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationFailed(
            f"options.{'.'.join(map(str, first['loc']))}: {first['msg']}."
        ) from exc
    # The config models say only "an int". The upstream seeds numpy with it, and
    # numpy's RandomState (scikit-learn's, so the emulator's stand-in) takes 0 to
    # 2**32 - 1 only: any other seed failed the job after it had queued. The range
    # every numpy seeding path takes is the one accepted here.
    seed = validated.random_state
    if seed is not None and not 0 <= seed <= MAX_RANDOM_STATE:
        raise ValidationFailed(
            f"options.random_state is {seed}; a seed must be from 0 to "
            f"{MAX_RANDOM_STATE} (2**32 - 1)."
        )
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


@dataclass(frozen=True)
class JsonTable:
    """A table sent as JSON: rows, records or columns; a train set's targets in `y`."""

    X: Any
    columns: Sequence[str] | None = None
    y: Sequence[Any] | None = None


@dataclass(frozen=True)
class FileTable:
    """An uploaded CSV or Parquet file, read where it was spooled; a train set names its target."""

    file: BinaryIO
    filename: str | None
    field: str
    target: str | None = None


TableInput = JsonTable | FileTable


def _train_parquet(task: str, data: TableInput) -> tuple[BinaryIO, list[str], list[str]]:
    """The train set as stored (Parquet, target last), its feature columns and those of
    them that are text."""
    if isinstance(data, FileTable):
        stored = ingest_upload(
            data.file,
            data.filename,
            name=data.field,
            target=Target(column=data.target or "", task=task),
        )
        return stored.file, stored.columns, stored.text_columns
    table = table_from_json(data.X, data.columns, name="train")
    labels = labels_from_json(data.y or [], task=task, n_rows=len(table))
    limit = upstream_limits()
    check_train_shape(limit, *table.shape)
    if task == js.CLASSIFICATION:
        check_classes(limit, labels.nunique())
    columns = list(table.columns)
    text_columns = [c for c in columns if not is_numeric_dtype(table[c].dtype)]
    table[TARGET_COLUMN] = labels
    # Encoded at once: the DataFrame is freed before the row is written.
    return encode_table(table), columns, text_columns


def _test_parquet(
    data: TableInput, model_columns: list[str], text_columns: list[str] | None
) -> BinaryIO:
    """The test set as stored, in the model's columns. A column the model was fitted on
    as text stays text when its cells here are numbers alone (101 is the category
    "101" the fit saw, not the number 101.0)."""
    text = set(text_columns or ())
    # The model's other columns were fitted as numbers; known for models fitted since
    # 0004 (None before: not checked).
    numeric = None if text_columns is None else [c for c in model_columns if c not in text]
    if isinstance(data, FileTable):
        stored = ingest_upload(
            data.file,
            data.filename,
            name=data.field,
            model_columns=model_columns,
            text_columns=text,
            numeric_columns=numeric,
        )
        return stored.file
    named = names_columns(data.X, data.columns)
    if not named:  # rows matched by position: named x0, x1, ... until aligned
        text = {f"x{j}" for j, c in enumerate(model_columns) if c in text}
    table = table_from_json(data.X, data.columns, name="test", text_columns=text)
    check_test_shape(upstream_limits(), table.shape[1])
    table = align_columns(table, model_columns, named=named)
    if numeric is not None:
        table = as_fitted_numbers(table, numeric, "test")
    return encode_table(table)


def _is_address(host: str | None) -> bool:
    try:
        ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return True


def _check_callback(session: Session, callback_url: str | None) -> None:
    """Refuse a callback URL whose host is not public, or does not resolve within
    CALLBACK_LOOKUP_TIMEOUT_S."""
    if callback_url is None:
        return
    # The lookup may take seconds (a host whose nameserver is slow or silent): the
    # request's pooled connection goes back to the pool meanwhile, or a few such
    # submits held every one of them. Nothing is written yet and no lock is held
    # (the key's last use, if written, is as good committed now). An address needs
    # no lookup, and its submit no extra commit.
    if not _is_address(urlsplit(callback_url).hostname):
        session.commit()
    check_target(
        callback_url,
        allow_private=get_settings().webhook_allow_private_targets,
        timeout=CALLBACK_LOOKUP_TIMEOUT_S,
    )


def _new_job(
    session: Session,
    user: User,
    type_: str,
    task: str,
    params: dict,
    callback_url: str | None,
    *,
    labels: dict[str, str] | None,
    model_id: uuid.UUID | None = None,
    train_parquet: BinaryIO | None = None,
    test_parquet: BinaryIO | None = None,
) -> Job:
    """Insert the job and stream its tables into its data row (the files are closed after)."""
    job = Job(
        id=uuid.uuid4(),
        user_id=user.id,
        type=type_,
        status=js.QUEUED,
        task=task,
        params=params,
        callback_url=callback_url,
        labels=labels,
        model_id=model_id,
        attempts=0,
    )
    session.add(job)
    session.flush()
    try:
        insert_job_data(session=session, job_id=job.id, train=train_parquet, test=test_parquet)
    finally:
        for file in (train_parquet, test_parquet):
            if file is not None:
                file.close()
    return job


def create_fit_job(
    *,
    session: Session,
    user: User,
    task: str,
    train: TableInput,
    options: dict[str, Any],
    callback_url: str | None,
    metadata: Any = None,
) -> Job:
    _check_task(task)
    params = {"options": _check_options(task, options)}
    _check_callback(session, callback_url)
    labels = check_metadata(metadata)
    train_parquet, _, _ = _train_parquet(task, train)
    fields = (session, user, js.FIT, task, params, callback_url)
    return _new_job(*fields, labels=labels, train_parquet=train_parquet)


def create_predict_job(
    *,
    session: Session,
    user: User,
    model_id: uuid.UUID,
    test: TableInput,
    output: str | None,
    quantiles: Sequence[float] | None,
    callback_url: str | None,
    metadata: Any = None,
) -> Job:
    model = get_model(session=session, user=user, model_id=model_id)
    params = _check_output(model.task, output, quantiles)
    _check_callback(session, callback_url)
    labels = check_metadata(metadata)
    test_parquet = _test_parquet(test, model.columns, model.text_columns)
    _hold_model(session, model)
    fields = (session, user, js.PREDICT, model.task, params, callback_url)
    return _new_job(*fields, labels=labels, model_id=model.id, test_parquet=test_parquet)


def _hold_model(session: Session, model: FittedModel) -> None:
    """Keep the model from being deleted until this submit commits, or ModelNotFound if
    it was deleted while the test table was read (an upload: seconds).

    Without it the job's row pointed at no model: a foreign-key violation, answered
    503 `service_unavailable`. FOR KEY SHARE makes a `DELETE /models/{id}` wait for
    the commit; the job then ends `model_not_found`, as one queued before it would.
    """
    held = session.execute(
        select(FittedModel.id)
        .where(FittedModel.id == model.id)
        .with_for_update(read=True, key_share=True)
    ).first()
    if held is None:
        raise ModelNotFound(f"No model {model.id}.")


def create_fit_predict_job(
    *,
    session: Session,
    user: User,
    task: str,
    train: TableInput,
    test: TableInput,
    options: dict[str, Any],
    output: str | None,
    quantiles: Sequence[float] | None,
    callback_url: str | None,
    metadata: Any = None,
) -> Job:
    _check_task(task)
    params = {"options": _check_options(task, options), **_check_output(task, output, quantiles)}
    _check_callback(session, callback_url)
    labels = check_metadata(metadata)
    train_parquet, train_columns, text_columns = _train_parquet(task, train)
    try:
        test_parquet = _test_parquet(test, train_columns, text_columns)
    except BaseException:
        train_parquet.close()
        raise
    fields = (session, user, js.FIT_PREDICT, task, params, callback_url)
    return _new_job(*fields, labels=labels, train_parquet=train_parquet, test_parquet=test_parquet)


def commit_and_send(session: Session, job: Job, *, new: bool) -> None:
    """Commit the submit now, and send a new job to the workers once it is committed.

    Called before the API builds its answer: FastAPI validates the response and
    ends the request's session in two more trips to its thread pool (~2 ms),
    which a worker would otherwise wait for before it could start the job. Sent
    only after the commit, so a worker always finds the row; nothing is sent if
    the commit fails.
    """
    if new:
        after_commit(session, partial(enqueue_job, job.id))
    session.commit()


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
    before: ListAnchor | uuid.UUID | None,
    status: str | None,
    type_: str | None,
    labels: dict[str, str] | None = None,
) -> list[Job]:
    """The caller's jobs, newest first; `before` is the last id of the previous page.
    `labels`: only jobs whose metadata holds every one of these pairs."""
    query = select(Job).where(Job.user_id == user.id)
    if status:
        query = query.where(Job.status == status)
    if type_:
        query = query.where(Job.type == type_)
    if labels:
        query = query.where(Job.labels.contains(labels))
    if isinstance(before, uuid.UUID):  # a bare job id: the anchor is that job
        before = get_job(session=session, user=user, job_id=before)
    if before is not None:
        query = query.where(_after_in_list(Job, before))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list(session.scalars(query))


def _after_in_list(table: type[Job] | type[FittedModel], anchor: Job | FittedModel | ListAnchor):
    """The rows listed after `anchor` (a page's last row) in a newest-first list:
    older, or as old with a smaller id (ids break ties in the order)."""
    return (table.created_at < anchor.created_at) | (
        (table.created_at == anchor.created_at) & (table.id < anchor.id)
    )


def cancel(*, session: Session, user: User, job_id: uuid.UUID) -> Job:
    job = get_job(session=session, user=user, job_id=job_id)
    if not cancel_job(session=session, job_id=job.id):
        raise JobAlreadyFinished(
            f"Job {job_id} has already finished ({job.status}).", job_status=job.status
        )
    session.refresh(job)
    return job


def get_result_json(*, session: Session, user: User, job_id: uuid.UUID) -> str:
    """A succeeded job's result as the JSON text Postgres holds.

    Sent on as it is: parsing it into Python and serializing it again would
    cost more than everything else a result request does, for large results
    many times more.
    """
    found = session.execute(
        select(Job.user_id, Job.status, cast(JobData.result, Text))
        .outerjoin(JobData, JobData.job_id == Job.id)
        .where(Job.id == job_id)
    ).one_or_none()
    if found is None or found.user_id != user.id:
        raise NotFound(f"No job {job_id}.")
    status, result = found.status, found[2]
    if status != js.SUCCEEDED or result is None:
        if status == js.SUCCEEDED:
            raise ResultExpired(f"The result of job {job_id} has expired and was deleted.")
        if status == js.CANCELED:
            raise JobCanceled(f"Job {job_id} was canceled; it has no result.")
        if status == js.FAILED:
            raise ResultNotAvailable(
                f"Job {job_id} failed; it has no result. GET /jobs/{job_id} has its error.",
                job_status=status,
            )
        raise ResultNotAvailable(
            f"Job {job_id} is {status}; its result is available once it has succeeded "
            "(GET this URL with ?wait=30 to wait for it).",
            job_status=status,
        )
    return result


def get_model(*, session: Session, user: User, model_id: uuid.UUID) -> FittedModel:
    model = session.get(FittedModel, model_id)
    if model is None or model.user_id != user.id:
        raise ModelNotFound(f"No model {model_id}.")
    return model


def delete_model(*, user: User, model_id: uuid.UUID) -> bool:
    """Delete the model here and, best effort, in the user's TabPFN account.

    Returns whether the upstream copy is gone too. Jobs that used the model keep
    their results; predicting with it is `model_not_found` from now on.

    The row goes first, in a transaction of its own that is over before the
    upstream call: no pooled connection waits on TabPFN, and a model that is
    gone upstream is never left behind here.
    """
    # Read before the row goes: a token this process cannot decrypt (a SECRET_KEY
    # rotation under way) answered 500 after the model was deleted.
    token = decrypt_or_none(user.tabpfn_token_encrypted)
    with session_scope() as session:
        # The copy's id as the row holds it when it goes: a refit that pointed the row
        # at a new copy meanwhile (worker.runner) commits first, and its copy is the
        # one deleted (read before the DELETE, the old id was, and the new copy stayed).
        upstream_model_id = session.scalar(
            delete(FittedModel)
            .where(FittedModel.id == model_id, FittedModel.user_id == user.id)
            .returning(FittedModel.upstream_model_id)
        )
        if upstream_model_id is None:
            raise ModelNotFound(f"No model {model_id}.")
    if token is None:
        log.warning(
            "model %s deleted; its copy in the TabPFN account stays: the owner's token "
            "cannot be decrypted here (is SECRET_KEY missing a key?)",
            model_id,
        )
        return False
    return delete_upstream_model(token, upstream_model_id)


def list_models(
    *,
    session: Session,
    user: User,
    limit: int | None = None,
    before: ListAnchor | uuid.UUID | None = None,
    labels: dict[str, str] | None = None,
) -> list[FittedModel]:
    """The caller's models, newest first: all of them, or `limit` after `before` (where
    the previous page ended, or a bare id of its last model, which must exist).
    `labels`: only models whose metadata holds every one of these pairs."""
    query = select(FittedModel).where(FittedModel.user_id == user.id)
    if labels:
        query = query.where(FittedModel.labels.contains(labels))
    if isinstance(before, uuid.UUID):
        before = get_model(session=session, user=user, model_id=before)
    if before is not None:
        query = query.where(_after_in_list(FittedModel, before))
    query = query.order_by(FittedModel.created_at.desc(), FittedModel.id.desc()).limit(limit)
    return list(session.scalars(query))
