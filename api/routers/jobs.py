"""Submitting jobs and reading their state and results."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from types import SimpleNamespace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import AnyHttpUrl, BaseModel
from sqlalchemy.orm import Session

from api.deps import Caller, Credentials, CurrentUser, SessionDep, get_current_user
from api.job_waiter import Watch, next_change
from api.multipart import multipart_variant, unreadable_json
from api.schemas import (
    MERGE_PATCH_BODY,
    ErrorOut,
    FitPredictRequest,
    FitRequest,
    JobError,
    JobLinks,
    JobOut,
    JobPage,
    JobStatus,
    JobType,
    LabelsUpdate,
    Output,
    PredictRequest,
    Task,
    WaitedJobOut,
)
from api.submit_wait import WaitingRoute, WaitQuery, waits_for_end
from shared.accounts.users import ensure_key_active
from shared.core.config import get_settings
from shared.core.db import session_scope
from shared.core.errors import (
    NotFound,
    ResultExpired,
    ResultNotAvailable,
    Unauthorized,
    ValidationFailed,
)
from shared.jobs import list_cursor
from shared.jobs import submit as jobs
from shared.jobs.deletion import delete_job as remove_job
from shared.jobs.events import answers_alone
from shared.jobs.idempotency import HashedRequest, create_once
from shared.jobs.job_metadata import parse_filters
from shared.jobs.relabel import relabel_job
from shared.jobs.states import FINISHED, QUEUED, SUCCEEDED
from shared.jobs.waiting import UserQueue, user_queue, waiting
from shared.models import Job, User
from shared.tables.table_files import MEDIA_TYPES, file_digest, result_table, write_table

# WaitingRoute: the submit operations take JSON or a multipart upload at one path
# (api.multipart), and with ?wait=S answer once the job ends (api.submit_wait).
router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=WaitingRoute)
KEEPALIVE_S = 15.0

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "unauthorized"},
    409: {"model": ErrorOut, "description": "idempotency_conflict"},
    422: {
        "model": ErrorOut,
        "description": "validation_error, limit_exceeded, number_out_of_range, "
        "callback_url_forbidden or callback_url_unresolvable; for uploads also "
        "unsupported_file or file_format_mismatch",
    },
}
# With ?wait=S (api/submit_wait.py): the job ended in time.
_WAITED = {
    "model": WaitedJobOut,
    "description": "With ?wait=S, the job ended within S seconds: the Job in its final "
    "state, with its `result` if it succeeded",
}
_TOO_LARGE = {
    "model": ErrorOut,
    "description": "payload_too_large: a JSON body over MAX_REQUEST_BYTES, "
    "or an upload over MAX_UPLOAD_BYTES",
}


def job_out(job: Job | SimpleNamespace, queue: UserQueue | None = None) -> JobOut:
    """The Job shape; `queue` (the owner's scheduling state) explains a queued job's wait."""
    path = f"/api/v1/jobs/{job.id}"
    return JobOut(
        id=job.id,
        type=job.type,
        status=job.status,
        stage=job.stage,
        task=job.task,
        model_id=job.model_id,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        error=JobError(code=job.error_code, message=job.error_message or "")
        if job.error_code
        else None,
        upstream_timings=job.upstream_timings,
        metadata=job.labels,
        waiting=waiting(job, queue) if queue is not None else None,
        links=JobLinks(self=path, result=f"{path}/result"),
    )


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        # An empty key is a client's unset variable, not a key: as one, it would
        # make every later submit a replay of the first or a conflict.
        min_length=1,
        max_length=255,
        description="Retry-safe submits: the same key and body return the first job "
        "(1 to 255 characters).",
    ),
]


def _accept(
    session: Session,
    user: User,
    response: Response,
    *,
    key: str | None,
    request: Callable[[], HashedRequest],
    create: Callable[[], Job],
) -> JobOut:
    job, created = create_once(session=session, user=user, key=key, request=request, create=create)
    jobs.commit_and_send(session, job, new=created)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return job_out(job)


def _json_request(route: str, body: BaseModel) -> HashedRequest:
    try:
        return route, _without_unset_metadata(body.model_dump(mode="json"))
    except ValueError as exc:  # pydantic's serializer stops past 255 levels of nesting
        # Hashed before the body is checked (a retry replays even if it would now be
        # refused), and no cell or option is valid that deep anyway.
        raise ValidationFailed(
            "The body nests arrays or objects too deeply (hundreds of levels): cells are "
            f"plain values and options at most {jobs.MAX_OPTIONS_DEPTH} levels deep."
        ) from exc


def _upload_request(
    route: str, fields: dict[str, Any], files: dict[str, UploadFile]
) -> HashedRequest:
    """The files by content (hashed in chunks from where they are spooled), with the fields."""
    digests = {name: file_digest(upload.file) for name, upload in files.items()}
    return f"{route}:upload", _without_unset_metadata({**fields, **digests})


def _without_unset_metadata(request: dict[str, Any]) -> dict[str, Any]:
    """The request as hashed before `metadata` existed, when it has none: a keyed retry
    that spans the upgrade replays its job instead of meeting a 409 conflict."""
    if not request.get("metadata"):  # none, or {} (stored as none)
        request.pop("metadata", None)
    return request


async def _answer_when_ended(request: Request, accepted: Response, wait: float) -> Response:
    """A submit's `?wait=S` (api.submit_wait): 200 with the ended job (and its result,
    if it succeeded) as soon as it ends, or `accepted`, the 202, after S seconds."""
    deadline = time.monotonic() + min(wait, get_settings().max_wait_s)
    job = JobOut.model_validate_json(accepted.body)
    user, key_id = request.state.user, request.state.api_key_id
    async with request.app.state.job_waiter.watching(str(job.id), only_when_finished=True) as watch:
        # A new job was sent to the workers a moment ago: the message that ends it
        # reaches this watch even if it came first (the waiter keeps recent ends).
        # A replayed submit's job may have ended long before: its state is read once.
        if "idempotent-replayed" in accepted.headers:
            job = await run_in_threadpool(_read, _job_view, user, job.id, key_id)
        # A success's key is checked with its result's read below, in one unit: on
        # every one-request job's path, a look of its own would cost another thread
        # hop and session.
        job = await _when_ended(watch, user, key_id, job, deadline, check_key_on_end=False)
    if job.status not in FINISHED:
        return accepted
    body = job.model_dump_json().encode()
    if job.status == SUCCEEDED:
        try:
            found = await run_in_threadpool(_read, _result_or_pending, user, job.id, key_id)
        except ResultExpired:  # its result deleted meanwhile (retention): the job alone
            found = None
        except NotFound:  # the job itself deleted (DELETE from another request)
            raise NotFound(f"Job {job.id} was deleted while this request waited for it.") from None
        if isinstance(found, str):
            body = body[:-1] + b',"result":' + found.encode() + b"}"
    else:
        await run_in_threadpool(_check_key, key_id)
    replayed = {k: v for k, v in accepted.headers.items() if k == "idempotent-replayed"}
    return Response(
        body, status_code=status.HTTP_200_OK, media_type="application/json", headers=replayed
    )


def _url(value: Any) -> str | None:
    return str(value) if value is not None else None


def _file(upload: UploadFile, field: str, target: str | None = None) -> jobs.FileTable:
    return jobs.FileTable(file=upload.file, filename=upload.filename, field=field, target=target)


def _form_json(text: str, field: str) -> Any:
    """A form field's JSON text; whatever json.loads cannot read is the field's 422, not a 500."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"{field} is not valid JSON: {exc}.") from exc
    except (RecursionError, ValueError) as exc:  # too deep, or an integer of 4300+ digits
        raise ValidationFailed(
            f"{field} is not JSON this service can read: {unreadable_json(exc)}."
        ) from exc


def _options(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    options = _form_json(text, "options")
    if not isinstance(options, dict):
        raise ValidationFailed('options must be a JSON object, e.g. {"n_estimators": 4}.')
    return options


def _metadata(text: str | None) -> Any:
    """The form's metadata JSON; its rules are checked with the submit's (job_metadata)."""
    return _form_json(text, "metadata") if text else None


def _quantiles(text: str | None) -> list[float] | None:
    """A JSON list ("[0.1, 0.9]") or a comma-separated list ("0.1,0.9")."""
    if not text or not text.strip():
        return None
    values = _form_json(text, "quantiles") if text.lstrip().startswith("[") else text.split(",")
    try:
        return [float(v) for v in values]
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: 400 digits
        raise ValidationFailed(
            "quantiles must be numbers, as JSON ([0.1, 0.9]) or comma-separated; "
            f"got {text[:80]!r}."
        ) from exc


FormTask = Annotated[Task, Form(description="classification or regression")]
FormTarget = Annotated[str, Form(description="The file's column to predict.")]
FormOptions = Annotated[
    str | None, Form(description='TabPFN estimator options as JSON text, e.g. {"n_estimators": 4}.')
]
FormOutput = Annotated[
    Output | None, Form(description="Default: labels (classification) or mean (regression).")
]
FormQuantiles = Annotated[
    str | None, Form(description='For output=quantiles: "0.1,0.5,0.9" or "[0.1, 0.5, 0.9]".')
]
FormCallback = Annotated[AnyHttpUrl | None, Form()]
FormMetadata = Annotated[
    str | None,
    Form(description='Your labels for the job as JSON text, e.g. {"order": "A-17"}.'),
]
TableFile = File(description="CSV (UTF-8, comma-separated, header row) or Parquet.")


def submit_fit_upload(
    task: FormTask,
    target: FormTarget,
    file: Annotated[UploadFile, TableFile],
    session: SessionDep,
    user: CurrentUser,
    response: Response,
    options: FormOptions = None,
    callback_url: FormCallback = None,
    metadata: FormMetadata = None,
    key: IdempotencyKeyHeader = None,
    wait: WaitQuery = 0,  # acted on by WaitingRoute, once the job is accepted
) -> JobOut:
    parsed_options, url, labels = _options(options), _url(callback_url), _metadata(metadata)

    def create() -> Job:
        return jobs.create_fit_job(
            session=session,
            user=user,
            task=task,
            train=_file(file, "file", target),
            options=parsed_options,
            callback_url=url,
            metadata=labels,
        )

    fields = {
        "task": task,
        "target": target,
        "options": parsed_options,
        "callback_url": url,
        "metadata": labels,
    }
    request = partial(_upload_request, "fit", fields, {"file": file})
    return _accept(session, user, response, key=key, request=request, create=create)


@router.post(
    "/fit",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Fit a model",
    responses={200: _WAITED, **_ERRORS, 413: _TOO_LARGE},
)
@multipart_variant(submit_fit_upload)
@waits_for_end(_answer_when_ended)
def submit_fit(
    body: FitRequest,
    session: SessionDep,
    user: CurrentUser,
    response: Response,
    key: IdempotencyKeyHeader = None,
    wait: WaitQuery = 0,  # acted on by WaitingRoute, once the job is accepted
) -> JobOut:
    """The training data as JSON (`train.X` as rows, records or columns, and
    `train.y`), or as an uploaded file (`multipart/form-data`): fields `task`,
    `target` (the file's column to predict), `file` (.csv or .parquet),
    `options` (JSON text), `callback_url` and `metadata` (JSON text)."""

    def create() -> Job:
        return jobs.create_fit_job(
            session=session,
            user=user,
            task=body.task,
            train=jobs.JsonTable(X=body.train.X, columns=body.train.columns, y=body.train.y),
            options=body.options,
            callback_url=_url(body.callback_url),
            metadata=body.metadata,
        )

    request = partial(_json_request, "fit", body)
    return _accept(session, user, response, key=key, request=request, create=create)


def submit_predict_upload(
    model_id: Annotated[uuid.UUID, Form()],
    file: Annotated[UploadFile, TableFile],
    session: SessionDep,
    user: CurrentUser,
    response: Response,
    output: FormOutput = None,
    quantiles: FormQuantiles = None,
    callback_url: FormCallback = None,
    metadata: FormMetadata = None,
    key: IdempotencyKeyHeader = None,
    wait: WaitQuery = 0,  # acted on by WaitingRoute, once the job is accepted
) -> JobOut:
    parsed_quantiles, url, labels = _quantiles(quantiles), _url(callback_url), _metadata(metadata)

    def create() -> Job:
        return jobs.create_predict_job(
            session=session,
            user=user,
            model_id=model_id,
            test=_file(file, "file"),
            output=output,
            quantiles=parsed_quantiles,
            callback_url=url,
            metadata=labels,
        )

    fields = {
        "model_id": str(model_id),
        "output": output,
        "quantiles": parsed_quantiles,
        "callback_url": url,
        "metadata": labels,
    }
    request = partial(_upload_request, "predict", fields, {"file": file})
    return _accept(session, user, response, key=key, request=request, create=create)


@router.post(
    "/predict",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Predict with a fitted model",
    responses={
        200: _WAITED,
        **_ERRORS,
        404: {"model": ErrorOut, "description": "model_not_found"},
        413: _TOO_LARGE,
    },
)
@multipart_variant(submit_predict_upload)
@waits_for_end(_answer_when_ended)
def submit_predict(
    body: PredictRequest,
    session: SessionDep,
    user: CurrentUser,
    response: Response,
    key: IdempotencyKeyHeader = None,
    wait: WaitQuery = 0,  # acted on by WaitingRoute, once the job is accepted
) -> JobOut:
    """The rows to predict as JSON (`X` as rows, records or columns), or as an
    uploaded file (`multipart/form-data`): fields `model_id`, `file` (.csv or
    .parquet, with the model's columns by name), `output`, `quantiles` (JSON
    text or comma-separated), `callback_url` and `metadata` (JSON text). Columns named by the caller
    are matched to the model's by name; unnamed rows by position."""

    def create() -> Job:
        return jobs.create_predict_job(
            session=session,
            user=user,
            model_id=body.model_id,
            test=jobs.JsonTable(X=body.X, columns=body.columns),
            output=body.output,
            quantiles=body.quantiles,
            callback_url=_url(body.callback_url),
            metadata=body.metadata,
        )

    request = partial(_json_request, "predict", body)
    return _accept(session, user, response, key=key, request=request, create=create)


def submit_fit_predict_upload(
    task: FormTask,
    target: Annotated[str, Form(description="The train file's column to predict.")],
    train_file: Annotated[UploadFile, TableFile],
    test_file: Annotated[UploadFile, TableFile],
    session: SessionDep,
    user: CurrentUser,
    response: Response,
    options: FormOptions = None,
    output: FormOutput = None,
    quantiles: FormQuantiles = None,
    callback_url: FormCallback = None,
    metadata: FormMetadata = None,
    key: IdempotencyKeyHeader = None,
    wait: WaitQuery = 0,  # acted on by WaitingRoute, once the job is accepted
) -> JobOut:
    parsed_options, parsed_quantiles = _options(options), _quantiles(quantiles)
    url, labels = _url(callback_url), _metadata(metadata)

    def create() -> Job:
        return jobs.create_fit_predict_job(
            session=session,
            user=user,
            task=task,
            train=_file(train_file, "train_file", target),
            test=_file(test_file, "test_file"),
            options=parsed_options,
            output=output,
            quantiles=parsed_quantiles,
            callback_url=url,
            metadata=labels,
        )

    fields = {
        "task": task,
        "target": target,
        "options": parsed_options,
        "output": output,
        "quantiles": parsed_quantiles,
        "callback_url": url,
        "metadata": labels,
    }
    files = {"train_file": train_file, "test_file": test_file}
    request = partial(_upload_request, "fit-predict", fields, files)
    return _accept(session, user, response, key=key, request=request, create=create)


@router.post(
    "/fit-predict",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Fit and predict in one job",
    responses={200: _WAITED, **_ERRORS, 413: _TOO_LARGE},
)
@multipart_variant(submit_fit_predict_upload)
@waits_for_end(_answer_when_ended)
def submit_fit_predict(
    body: FitPredictRequest,
    session: SessionDep,
    user: CurrentUser,
    response: Response,
    key: IdempotencyKeyHeader = None,
    wait: WaitQuery = 0,  # acted on by WaitingRoute, once the job is accepted
) -> JobOut:
    """`train` and `test` as JSON, or two uploaded files (`multipart/form-data`):
    fields `task`, `target` (the train file's column to predict), `train_file`,
    `test_file`, `options`, `output`, `quantiles`, `callback_url` and `metadata`."""

    def create() -> Job:
        return jobs.create_fit_predict_job(
            session=session,
            user=user,
            task=body.task,
            train=jobs.JsonTable(X=body.train.X, columns=body.train.columns, y=body.train.y),
            test=jobs.JsonTable(X=body.test.X, columns=body.test.columns),
            options=body.options,
            output=body.output,
            quantiles=body.quantiles,
            callback_url=_url(body.callback_url),
            metadata=body.metadata,
        )

    request = partial(_json_request, "fit-predict", body)
    return _accept(session, user, response, key=key, request=request, create=create)


@router.get("", summary="List your jobs, newest first")
def list_jobs(
    session: SessionDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        str | None,
        Query(max_length=100, description="Cursor: next_cursor of a page"),
    ] = None,
    # The job vocabulary, not any text: a misspelt filter (type=fit-predict) is a 422
    # naming the values, not an empty page that reads as "no such jobs".
    job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
    job_type: Annotated[JobType | None, Query(alias="type")] = None,
    metadata: Annotated[
        list[str] | None,
        Query(
            description="key:value (repeatable): only jobs whose metadata holds every "
            "pair, e.g. ?metadata=order:A-17&metadata=pipeline:nightly."
        ),
    ] = None,
) -> JobPage:
    # One more than the page: a cursor only when a job follows (a full last page
    # handed out a cursor to an empty page).
    page = jobs.list_jobs(
        session=session,
        user=user,
        limit=limit + 1,
        before=list_cursor.decode(before),
        status=job_status,
        type_=job_type,
        labels=parse_filters(metadata or []),
    )
    more, page = len(page) > limit, page[:limit]
    next_cursor = list_cursor.encode(page[-1].created_at, page[-1].id) if more else None
    queued = any(j.status == QUEUED for j in page)
    queue = user_queue(session=session, user_id=user.id) if queued else None
    return JobPage(jobs=[job_out(j, queue) for j in page], next_cursor=next_cursor)


def _job_view(session: Session, user: User, job_id: uuid.UUID) -> JobOut:
    job = jobs.get_job(session=session, user=user, job_id=job_id)
    queue = user_queue(session=session, user_id=user.id) if job.status == QUEUED else None
    return job_out(job, queue)


def _read(
    view: Callable[[Session, User, uuid.UUID], Any], user: User, job_id: uuid.UUID, key_id: str
) -> Any:
    """`view` of the job in a short transaction of its own (a long-poll's later looks),
    once the caller's key `key_id` is found still active: a key revoked while its
    request waits gets a 401 (or the end of its event stream), not the job.

    Reads only: each statement commits on its own, without BEGIN and COMMIT round trips.
    """
    with session_scope(autocommit=True) as session:
        ensure_key_active(session=session, key_id=key_id)
        return view(session, user, job_id)


def _check_key(key_id: str) -> None:
    with session_scope(autocommit=True) as session:
        ensure_key_active(session=session, key_id=key_id)


def _authenticate_and_read(
    view: Callable[[Session, User, uuid.UUID], Any],
    request: Request,
    credentials: Credentials,
    job_id: uuid.UUID,
) -> tuple[User, Any]:
    """The caller and `view` of the job in one short unit (a long-poll's first look).

    Autocommit: reads, and the key's once-a-minute last-use write, which is one
    statement and is better committed at once than held to the end of the look.
    """
    with session_scope(autocommit=True) as session:
        user = get_current_user(request, session, credentials)
        return user, view(session, user, job_id)


@router.get(
    "/{job_id}",
    summary="A job's state; with ?wait=S, as soon as it ends",
    responses={404: {"model": ErrorOut, "description": "not_found"}},
)
async def get_job(
    job_id: uuid.UUID,
    request: Request,
    credentials: Credentials,
    wait: Annotated[
        float,
        Query(ge=0, description="Seconds to wait for the job to end (long-poll; capped)."),
    ] = 0,
) -> JobOut:
    """Without `wait`, the current state. With `wait=S`, the answer comes the moment
    the job ends, or with its current state after S seconds (at most MAX_WAIT_S)."""
    deadline = time.monotonic() + min(wait, get_settings().max_wait_s)
    waiter = request.app.state.job_waiter
    async with waiter.watching(str(job_id), only_when_finished=True) as watch:
        # Watching first: a change between this read and the wait is not missed. The
        # key is checked in the same transaction, which holds no connection after it.
        user, job = await run_in_threadpool(
            _authenticate_and_read, _job_view, request, credentials, job_id
        )
        return await _when_ended(watch, user, request.state.api_key_id, job, deadline)


async def _when_ended(
    watch: Watch,
    user: User,
    key_id: str,
    job: JobOut,
    deadline: float,
    *,
    check_key_on_end: bool = True,
) -> JobOut:
    """`job` the moment it ends, or as last seen at `deadline` (monotonic), watched by
    `watch` (entered before `job` was read, so no change between the two is missed).
    Every look after a wait checks that the caller's key `key_id` is still active;
    `check_key_on_end=False`: not the end's, which the caller checks itself."""
    while True:
        if job.status in FINISHED:  # as read from its row, with its labels as they are now
            return job
        final = watch.final
        if final is not None and final["user_id"] == str(user.id):
            if not answers_alone(final):  # some fields not sent: the job as stored
                return await run_in_threadpool(_read, _job_view, user, job.id, key_id)
            # Ended: the message carried the fields; no need to read them back, but
            # the key may have been revoked while the request waited.
            if check_key_on_end:
                await run_in_threadpool(_check_key, key_id)
            return job_out(SimpleNamespace(**final))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return job
        await next_change(watch, remaining)
        if watch.final is None:  # the re-check timer, or an end without its fields
            job = await run_in_threadpool(_read, _job_view, user, job.id, key_id)


def _sse(job: JobOut) -> str:
    return f"event: job\nid: {job.status}:{job.stage}\ndata: {job.model_dump_json()}\n\n"


@router.get(
    "/{job_id}/events",
    summary="Server-sent events of the job's stage and state changes",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "`event: job` per change"},
        404: {"model": ErrorOut, "description": "not_found"},
    },
)
async def job_events(job_id: uuid.UUID, request: Request, user: Caller) -> StreamingResponse:
    """One `event: job` (the Job as JSON) now and at every change of state or
    stage; the stream ends after the job ends. If the API key is revoked while
    the stream is open, it sends `event: error` (code `unauthorized`) and ends; if
    the job is deleted meanwhile, the same with code `not_found`."""
    key_id = request.state.api_key_id
    first = await run_in_threadpool(_read, _job_view, user, job_id, key_id)  # 404 first

    async def stream() -> AsyncIterator[str]:
        last = first
        yield _sse(first)
        async with request.app.state.job_waiter.watching(str(job_id)) as watch:
            while last.status not in FINISHED and not await request.is_disconnected():
                await next_change(watch, KEEPALIVE_S)
                try:
                    job = await run_in_threadpool(_read, _job_view, user, job_id, key_id)
                # The key was revoked, or the job deleted, while the stream was open: an
                # error event that says so ends it, rather than a cut connection.
                except (Unauthorized, NotFound) as exc:
                    error = {"detail": exc.message, "code": exc.code}
                    yield f"event: error\ndata: {json.dumps(error)}\n\n"
                    return
                if (job.status, job.stage, job.attempts, job.waiting) != (
                    last.status,
                    last.stage,
                    last.attempts,
                    last.waiting,
                ):
                    yield _sse(job)
                    last = job
                else:
                    yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


@router.post(
    "/{job_id}/cancel",
    summary="Cancel a job",
    responses={
        404: {"model": ErrorOut, "description": "not_found"},
        409: {"model": ErrorOut, "description": "job_already_finished"},
    },
)
def cancel_job(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> JobOut:
    """A queued job is canceled at once and never runs. A running job is marked
    canceled now; its worker stops at its next step and its outcome is discarded."""
    return job_out(jobs.cancel(session=session, user=user, job_id=job_id))


@router.patch(
    "/{job_id}",
    summary="Change a job's metadata",
    openapi_extra=MERGE_PATCH_BODY,
    responses={
        404: {"model": ErrorOut, "description": "not_found"},
        422: {"model": ErrorOut, "description": "validation_error: the labels' rules"},
    },
)
def update_job(
    job_id: uuid.UUID, body: LabelsUpdate, session: SessionDep, user: CurrentUser
) -> JobOut:
    """`metadata` is merged into the job's labels as a JSON Merge Patch (RFC 7396):
    `{"metadata": {"status": "shipped", "draft": null}}` sets `status` and removes
    `draft`; `{"metadata": null}` removes them all. Any job, queued, running or
    ended. Its webhook event keeps the labels the job had when it ended.
    `Content-Type: application/json` or `application/merge-patch+json`."""
    if "metadata" in body.model_fields_set:  # else nothing to change: the job as it is
        relabel_job(session=session, user=user, job_id=job_id, patch=body.metadata)
    return _job_view(session, user, job_id)  # the changed row, from the session


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a finished job and its data",
    responses={
        404: {"model": ErrorOut, "description": "not_found"},
        409: {"model": ErrorOut, "description": "job_not_finished: cancel it first"},
    },
)
def delete_job(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> Response:
    """The job's tables and result go at once, not after the retention period, and
    with them what retention keeps: the job's row, its webhook deliveries and its
    Idempotency-Key. A fit's model stays (delete it with `DELETE /models/{id}`). A
    queued or running job is 409 `job_not_finished`: cancel it first."""
    remove_job(session=session, user=user, job_id=job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


ResultFormat = Literal["json", "csv", "parquet"]
_ACCEPTED_MEDIA = {
    "application/json": "json",
    "text/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
}


def _result_format(requested: str | None, accept: str | None) -> str:
    """?format= first; else the Accept header's preferred table type; else JSON."""
    if requested:
        return requested
    best, best_q = "json", 0.0
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = next((p[2:] for p in params if p.startswith("q=")), "1")
        try:
            quality = float(q)
        except ValueError:
            continue
        kind = _ACCEPTED_MEDIA.get(media.lower())
        if kind is not None and quality > best_q:
            best, best_q = kind, quality
    return best


@router.get(
    "/{job_id}/result",
    summary="A succeeded job's result: JSON, or a CSV or Parquet table",
    response_model=dict[str, Any],
    responses={
        200: {
            "description": "The result: JSON by default; a table with ?format=csv|parquet "
            "or Accept: text/csv | application/vnd.apache.parquet.",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                },
            },
        },
        404: {"model": ErrorOut, "description": "not_found: no such job, or its result expired"},
        409: {
            "model": ErrorOut,
            "description": "result_not_available: the job has not succeeded (yet, or "
            "failed: job_status says which); canceled: the job was canceled",
        },
    },
)
async def get_result(
    job_id: uuid.UUID,
    request: Request,
    credentials: Credentials,
    result_format: Annotated[
        ResultFormat | None,
        Query(alias="format", description="json, csv or parquet; overrides Accept."),
    ] = None,
    escape_formulas: Annotated[
        bool,
        Query(
            description="CSV only: text cells starting with = + - @, a tab or a carriage "
            "return get a leading ' so a spreadsheet shows them instead of running them "
            "(numbers stay numbers). false writes them as they are.",
        ),
    ] = True,
    wait: Annotated[
        float,
        Query(
            ge=0,
            description="Seconds to wait for a queued or running job to succeed (long-poll; "
            "capped): the result in one request instead of a long-poll and a fetch.",
        ),
    ] = 0,
) -> Any:
    """JSON by default. As a table with `?format=csv|parquet`, or `Accept: text/csv`
    or `application/vnd.apache.parquet` (also `application/x-parquet`), sent as an
    attachment named `<job_id>.csv|.parquet`. Predictions: one row per input row,
    in input order; columns `prediction`, then `proba_<class>` per class (output
    probabilities) or `q_<quantile>` per quantile. A fit: one row of its fields
    (`model_id`, `task`, `n_rows`, `n_features`, `classes` as JSON text).

    A CSV's text cells (class labels, the column names made from them) that start
    with `=`, `+`, `-`, `@`, a tab or a carriage return are written with a leading
    `'`, so a spreadsheet shows them as text instead of running them as formulas
    (OWASP's CSV injection advice); numbers, and text that is only a number, are
    written as they are. `escape_formulas=false` turns this off. JSON and Parquet
    are never changed.

    With `wait=S`, a job still queued or running is waited for: the answer comes
    the moment it ends (its result, or the error of a job that did not succeed),
    or 409 `result_not_available` with its `job_status` after S seconds (at most
    MAX_WAIT_S), and the client asks again."""
    kind = _result_format(result_format, request.headers.get("accept"))
    deadline = time.monotonic() + min(wait, get_settings().max_wait_s)
    watching = (
        request.app.state.job_waiter.watching(str(job_id), only_when_finished=True)
        if wait > 0
        else contextlib.nullcontext()
    )
    async with watching as watch:
        # Watching first (as the job long-poll does): an end between this read and the
        # wait is not missed. The key is checked in the same short transaction.
        user, found = await run_in_threadpool(
            _authenticate_and_read, _result_or_pending, request, credentials, job_id
        )
        while isinstance(found, ResultNotAvailable):
            remaining = deadline - time.monotonic()  # never above 0 without `wait`
            if found.extra.get("job_status") in FINISHED or remaining <= 0:
                raise found
            await next_change(watch, remaining)
            found = await run_in_threadpool(
                _read, _result_or_pending, user, job_id, request.state.api_key_id
            )
    if kind == "json":
        return Response(found, media_type="application/json")
    table = await run_in_threadpool(
        lambda: write_table(result_table(json.loads(found)), kind, escape_formulas=escape_formulas)
    )
    return Response(
        table,
        media_type=MEDIA_TYPES[kind],
        headers={"Content-Disposition": f'attachment; filename="{job_id}.{kind}"'},
    )


def _result_or_pending(session: Session, user: User, job_id: uuid.UUID) -> str | ResultNotAvailable:
    """The result's JSON text; for a job that has not succeeded, the 409 to answer with."""
    try:
        return jobs.get_result_json(session=session, user=user, job_id=job_id)
    except ResultNotAvailable as not_yet:
        return not_yet
