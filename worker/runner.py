"""Run one job: claim it, call the upstream, record the outcome.

Thin on purpose: state lives in Postgres (shared.job_lifecycle), upstream
calls in worker.upstream; this module only sequences them.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared import job_states as js
from shared.config import get_settings
from shared.db import session_scope
from shared.errors import ModelNotFound, ServiceError
from shared.job_lifecycle import (
    Claim,
    claim_job,
    fail_job,
    requeue_job,
    set_stage,
    succeed_job,
)
from shared.models import FittedModel, Job, JobData, User
from shared.payloads import decode_table, split_train
from shared.security import decrypt_secret
from worker.upstream import TabPFNUpstream, as_list, classify_fault

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    """What the task should do next: nothing, or send the job again after a delay."""

    retry_in_s: float | None = None


@dataclass
class _Loaded:
    job: Job
    token: str
    train: pd.DataFrame | None
    test: pd.DataFrame | None
    model: FittedModel | None


def _load(claim: Claim) -> _Loaded:
    with session_scope() as session:
        job = session.get(Job, claim.job_id)
        data = session.get(JobData, claim.job_id)
        user = session.get(User, job.user_id)
        model = session.get(FittedModel, job.model_id) if job.type == js.PREDICT else None
        if job.type == js.PREDICT and model is None:
            raise _model_deleted()
        if data is None or (data.train_parquet is None and data.test_parquet is None):
            raise ServiceError("The job's data has been deleted (retention); submit it again.")
        return _Loaded(
            job=job,
            token=decrypt_secret(user.tabpfn_token_encrypted),
            train=decode_table(data.train_parquet) if data.train_parquet else None,
            test=decode_table(data.test_parquet) if data.test_parquet else None,
            model=model,
        )


def _model_deleted() -> ServiceError:
    return ModelNotFound("The model this job predicts with has been deleted.")


def _stage(claim: Claim, stage: str) -> None:
    with session_scope() as session:
        set_stage(session=session, claim=claim, stage=stage)


def _classes(y: pd.Series) -> list[Any]:
    return np.unique(y.to_numpy()).tolist()


def _predict(
    upstream: TabPFNUpstream,
    *,
    task: str,
    upstream_model_id: str,
    X: pd.DataFrame,
    params: dict,
    classes: list[Any] | None,
) -> tuple[dict[str, Any], dict | None]:
    """One upstream predict call shaped into our result."""
    output = params["output"]
    options = params.get("options", {})
    if task == js.CLASSIFICATION:
        # Labels come back in the user's label type: map them onto the classes.
        lookup = {c: c for c in classes or []}
        if output == "probabilities":
            p = upstream.predict(
                task=task,
                upstream_model_id=upstream_model_id,
                X=X,
                output_type="probas",
                options=options,
            )
            probabilities = np.asarray(p.values, dtype=float)
            labels = [classes[i] for i in probabilities.argmax(axis=1)]
            result = {
                "predictions": labels,
                "probabilities": as_list(probabilities),
                "classes": classes,
            }
            return result, p.timings
        p = upstream.predict(
            task=task,
            upstream_model_id=upstream_model_id,
            X=X,
            output_type="preds",
            options=options,
        )
        labels = [lookup.get(v, v) for v in as_list(p.values)]
        return {"predictions": labels, "classes": classes}, p.timings
    if output == "quantiles":
        quantiles = params["quantiles"]
        p = upstream.predict(
            task=task,
            upstream_model_id=upstream_model_id,
            X=X,
            output_type="quantiles",
            options=options,
            quantiles=quantiles,
        )
        per_quantile = as_list(p.values)
        # The point prediction: the median when asked for, else the middle quantile.
        middle = quantiles.index(0.5) if 0.5 in quantiles else len(quantiles) // 2
        result = {
            "predictions": per_quantile[middle],
            "quantiles": {
                str(q): values for q, values in zip(quantiles, per_quantile, strict=True)
            },
        }
        return result, p.timings
    p = upstream.predict(
        task=task, upstream_model_id=upstream_model_id, X=X, output_type=output, options=options
    )
    return {"predictions": as_list(p.values)}, p.timings


def _execute(claim: Claim, loaded: _Loaded) -> None:
    job = loaded.job
    upstream = TabPFNUpstream(loaded.token)
    params = job.params
    timings: dict[str, Any] = {}
    new_model: FittedModel | None = None
    result: dict[str, Any]

    if job.type in (js.FIT, js.FIT_PREDICT):
        X, y = split_train(loaded.train)
        _stage(claim, js.STAGE_FITTING)
        fitted = upstream.fit(task=job.task, X=X, y=y, options=params.get("options", {}))
        timings["fit"] = fitted.timings
        classes = _classes(y) if job.task == js.CLASSIFICATION else None
        new_model = FittedModel(
            id=uuid.uuid4(),
            user_id=job.user_id,
            fit_job_id=job.id,
            task=job.task,
            upstream_model_id=fitted.upstream_model_id,
            columns=list(X.columns),
            classes=classes,
            n_rows=len(X),
            n_features=X.shape[1],
        )
        upstream_model_id = fitted.upstream_model_id
        result = {
            "model_id": str(new_model.id),
            "task": job.task,
            "n_rows": len(X),
            "n_features": X.shape[1],
        }
        if classes is not None:
            result["classes"] = classes
    else:
        upstream_model_id = loaded.model.upstream_model_id
        classes = loaded.model.classes

    if job.type in (js.PREDICT, js.FIT_PREDICT):
        _stage(claim, js.STAGE_PREDICTING)
        prediction, timings["predict"] = _predict(
            upstream,
            task=job.task,
            upstream_model_id=upstream_model_id,
            X=loaded.test,
            params=params,
            classes=classes,
        )
        if job.type == js.FIT_PREDICT:
            prediction["model_id"] = result["model_id"]
        result = prediction

    _stage(claim, js.STAGE_STORING)
    with session_scope() as session:
        if new_model is not None:
            session.add(new_model)
            session.flush()
        stored = succeed_job(
            session=session,
            claim=claim,
            result=result,
            model_id=new_model.id if new_model else None,
            timings=timings,
        )
        if not stored:
            # Our claim was taken over (the sweeper re-queued us): drop this run's writes.
            session.rollback()
            log.warning("job %s: claim lost before storing; result discarded", job.id)


def run_job(job_id: uuid.UUID) -> RunOutcome:
    with session_scope() as session:
        claim = claim_job(session=session, job_id=job_id)
    if claim is None:
        log.info("job %s is not queued; nothing to do", job_id)
        return RunOutcome()
    log.info("job %s: claimed (attempt %d)", job_id, claim.attempt)
    try:
        _execute(claim, _load(claim))
    except Exception as exc:
        return _handle_failure(claim, exc)
    log.info("job %s: done", job_id)
    return RunOutcome()


def _handle_failure(claim: Claim, exc: Exception) -> RunOutcome:
    if isinstance(exc, ServiceError):
        error, transient = exc, False
    elif (fault := classify_fault(exc)) is not None:
        error, transient = fault.error, fault.transient
    else:
        log.exception("job %s: unexpected error", claim.job_id)
        error = ServiceError("The job failed on an unexpected error; it has been logged.")
        transient = False
    settings = get_settings()
    with session_scope() as session:
        if transient and claim.attempt < settings.max_attempts:
            requeue_job(session=session, claim=claim, code=error.code, message=error.message)
            delay = min(2.0**claim.attempt, 60.0)
            log.warning("job %s: %s; retrying in %.0fs", claim.job_id, error.code, delay)
            return RunOutcome(retry_in_s=delay)
        fail_job(session=session, claim=claim, code=error.code, message=error.message)
    log.warning("job %s: failed with %s", claim.job_id, error.code)
    return RunOutcome()
