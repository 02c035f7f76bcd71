"""Submitting jobs and reading their state and results."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.deps import Caller, CurrentUser, SessionDep
from api.job_waiter import next_change
from api.schemas import (
    ErrorOut,
    FitPredictRequest,
    FitRequest,
    JobError,
    JobLinks,
    JobOut,
    JobPage,
    PredictRequest,
)
from shared import jobs
from shared.config import get_settings
from shared.db import session_scope
from shared.idempotency import create_once, fingerprint
from shared.job_states import FINISHED
from shared.models import Job, User
from shared.queue import enqueue_job

router = APIRouter(prefix="/jobs", tags=["jobs"])
KEEPALIVE_S = 15.0

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "unauthorized"},
    409: {"model": ErrorOut, "description": "idempotency_conflict"},
    422: {"model": ErrorOut, "description": "validation_error or limit_exceeded"},
}


def job_out(job: Job) -> JobOut:
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
        links=JobLinks(self=path, result=f"{path}/result"),
    )


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Retry-safe submits: the same key and body return the first job.",
    ),
]


def _accept(
    session: Session,
    user: User,
    response: Response,
    *,
    key: str | None,
    route: str,
    body: BaseModel,
    create: Callable[[], Job],
) -> JobOut:
    request_hash = fingerprint(route, body.model_dump(mode="json"))
    job, created = create_once(
        session=session, user=user, key=key, request_hash=request_hash, create=create
    )
    # Enqueue only after the row is committed, so a worker always finds it.
    session.commit()
    session.refresh(job)
    if created:
        enqueue_job(job.id)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    return job_out(job)


def _url(value: Any) -> str | None:
    return str(value) if value is not None else None


@router.post("/fit", status_code=status.HTTP_202_ACCEPTED, summary="Fit a model", responses=_ERRORS)
def submit_fit(
    body: FitRequest,
    session: SessionDep,
    user: CurrentUser,
    response: Response,
    key: IdempotencyKeyHeader = None,
) -> JobOut:
    def create() -> Job:
        return jobs.create_fit_job(
            session=session,
            user=user,
            task=body.task,
            X=body.train.X,
            y=body.train.y,
            columns=body.train.columns,
            options=body.options,
            callback_url=_url(body.callback_url),
        )

    return _accept(session, user, response, key=key, route="fit", body=body, create=create)


@router.post(
    "/predict",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Predict with a fitted model",
    responses={**_ERRORS, 404: {"model": ErrorOut, "description": "model_not_found"}},
)
def submit_predict(
    body: PredictRequest,
    session: SessionDep,
    user: CurrentUser,
    response: Response,
    key: IdempotencyKeyHeader = None,
) -> JobOut:
    def create() -> Job:
        return jobs.create_predict_job(
            session=session,
            user=user,
            model_id=body.model_id,
            X=body.X,
            columns=body.columns,
            output=body.output,
            quantiles=body.quantiles,
            callback_url=_url(body.callback_url),
        )

    return _accept(session, user, response, key=key, route="predict", body=body, create=create)


@router.post(
    "/fit-predict",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Fit and predict in one job",
    responses=_ERRORS,
)
def submit_fit_predict(
    body: FitPredictRequest,
    session: SessionDep,
    user: CurrentUser,
    response: Response,
    key: IdempotencyKeyHeader = None,
) -> JobOut:
    def create() -> Job:
        return jobs.create_fit_predict_job(
            session=session,
            user=user,
            task=body.task,
            X=body.train.X,
            y=body.train.y,
            columns=body.train.columns,
            test_X=body.test.X,
            test_columns=body.test.columns,
            options=body.options,
            output=body.output,
            quantiles=body.quantiles,
            callback_url=_url(body.callback_url),
        )

    return _accept(session, user, response, key=key, route="fit-predict", body=body, create=create)


@router.get("", summary="List your jobs, newest first")
def list_jobs(
    session: SessionDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[uuid.UUID | None, Query(description="Cursor: next_cursor of a page")] = None,
    job_status: Annotated[str | None, Query(alias="status")] = None,
    job_type: Annotated[str | None, Query(alias="type")] = None,
) -> JobPage:
    page = jobs.list_jobs(
        session=session, user=user, limit=limit, before=before, status=job_status, type_=job_type
    )
    next_cursor = page[-1].id if len(page) == limit else None
    return JobPage(jobs=[job_out(j) for j in page], next_cursor=next_cursor)


def _read_job(user: User, job_id: uuid.UUID) -> JobOut:
    with session_scope() as session:
        return job_out(jobs.get_job(session=session, user=user, job_id=job_id))


@router.get(
    "/{job_id}",
    summary="A job's state; with ?wait=S, as soon as it ends",
    responses={404: {"model": ErrorOut, "description": "not_found"}},
)
async def get_job(
    job_id: uuid.UUID,
    request: Request,
    user: Caller,
    wait: Annotated[
        float,
        Query(ge=0, description="Seconds to wait for the job to end (long-poll; capped)."),
    ] = 0,
) -> JobOut:
    """Without `wait`, the current state. With `wait=S`, the answer comes the moment
    the job ends, or with its current state after S seconds (at most MAX_WAIT_S)."""
    deadline = time.monotonic() + min(wait, get_settings().max_wait_s)
    async with request.app.state.job_waiter.watching(str(job_id)) as changed:
        while True:
            job = await run_in_threadpool(_read_job, user, job_id)
            remaining = deadline - time.monotonic()
            if job.status in FINISHED or remaining <= 0:
                return job
            await next_change(changed, remaining)


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
    stage; the stream ends after the job ends."""
    first = await run_in_threadpool(_read_job, user, job_id)  # 404 before streaming

    async def stream() -> AsyncIterator[str]:
        last = first
        yield _sse(first)
        async with request.app.state.job_waiter.watching(str(job_id)) as changed:
            while last.status not in FINISHED and not await request.is_disconnected():
                await next_change(changed, KEEPALIVE_S)
                job = await run_in_threadpool(_read_job, user, job_id)
                if (job.status, job.stage, job.attempts) != (
                    last.status,
                    last.stage,
                    last.attempts,
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


@router.get(
    "/{job_id}/result",
    summary="A succeeded job's result",
    responses={
        404: {"model": ErrorOut, "description": "not_found"},
        409: {"model": ErrorOut, "description": "result_not_available: the job has not succeeded"},
    },
)
def get_result(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return jobs.get_result(session=session, user=user, job_id=job_id)
