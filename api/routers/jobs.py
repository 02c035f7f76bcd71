"""Submitting jobs and reading their state and results."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.deps import CurrentUser, SessionDep
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
from shared.idempotency import create_once, fingerprint
from shared.models import Job, User
from shared.queue import enqueue_job

router = APIRouter(prefix="/jobs", tags=["jobs"])

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


@router.get(
    "/{job_id}",
    summary="A job's state",
    responses={404: {"model": ErrorOut, "description": "not_found"}},
)
def get_job(job_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> JobOut:
    return job_out(jobs.get_job(session=session, user=user, job_id=job_id))


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
