"""Serve the queue: claim the next job by the scheduler's policy, run it, repeat.

A Celery message is a wake-up: the slot that receives it claims whatever
shared.jobs.scheduling says should run next, runs it, and goes on while there is
claimable work. Thin on purpose: state lives in Postgres (shared.jobs.lifecycle),
the policy in shared.jobs.scheduling, upstream budgets in shared.upstream.pacing, upstream
calls in shared.upstream.fit_predict; this module only sequences them.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import redis
from celery.exceptions import SoftTimeLimitExceeded
from pandas.api.types import is_numeric_dtype
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from shared.accounts.security import decrypt_secret, token_fingerprint
from shared.core.config import get_settings
from shared.core.db import session_scope
from shared.core.errors import ModelNotFound, ServiceError, ServiceUnavailable
from shared.jobs import states as js
from shared.jobs.lifecycle import (
    Claim,
    fail_job,
    hand_back_runs_of,
    release_dead_run,
    requeue_job,
    succeed_job,
    this_worker,
    wait_for_window,
)
from shared.jobs.repository import (
    load_job_for_run,
    model_exists,
    running_jobs_on_host,
    set_upstream_model_id,
    training_data,
    type_and_token,
)
from shared.jobs.scheduling import claim_next, pause_user
from shared.models import FittedModel, Job
from shared.queue import enqueue_job, wake_at, wake_now
from shared.tables.payloads import decode_table, split_train
from shared.upstream import pacing
from shared.upstream.account import delete_upstream_model
from shared.upstream.faults import classify_fault
from shared.upstream.fit_predict import TabPFNUpstream, as_list
from worker.heartbeat import TIME_LIMIT_CODE, ClaimLost, Lease, holder_is_dead, holding, keeper

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
    pending_test: Future[pd.DataFrame] | None
    model: FittedModel | None
    # The steps ("fit", "predict") whose upstream calls this run began (TabPFNUpstream).
    steps_begun: set[str] = field(default_factory=set)

    @property
    def test(self) -> pd.DataFrame | None:
        return self.pending_test.result() if self.pending_test else None

    @property
    def fingerprint(self) -> str:
        return token_fingerprint(self.token)


DECODE_THREADS = 4


@cache
def decoder_pool() -> ThreadPoolExecutor:
    """This process's test-set decoders, made in the process that uses them."""
    return ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode")


# A thread does not survive a fork, but a cached executor would, believing its
# threads alive, and take work that nothing ever runs: a prefork pool process forked
# after the node had started its decoders hung every fit-predict until its deadline.
os.register_at_fork(after_in_child=decoder_pool.cache_clear)


# Set when the worker is asked to stop: slots finish their job and claim no more.
draining = threading.Event()


def _load(job_id: uuid.UUID) -> _Loaded:
    """The claimed job's rows as tables; raised here, after the claim committed, errors fail it."""
    # Reads of rows that do not change once submitted: no common snapshot needed.
    with session_scope(autocommit=True) as session:
        job, data, token_encrypted, model = load_job_for_run(session=session, job_id=job_id)
    if job.type == js.PREDICT and model is None:
        raise ModelNotFound("The model this job predicts with has been deleted.")
    if data is None or (data.train_parquet is None and data.test_parquet is None):
        raise ServiceError("The job's data has been deleted (retention); submit it again.")
    # The test set is decoded while the fit runs upstream: it is needed only after.
    test = data.test_parquet
    pending_test = decoder_pool().submit(decode_table, test) if test else None
    return _Loaded(
        job=job,
        token=decrypt_secret(token_encrypted),
        train=decode_table(data.train_parquet) if data.train_parquet else None,
        pending_test=pending_test,
        model=model if job.type == js.PREDICT else None,
    )


def release_dead_runs() -> int:
    """Queue again, at once, the jobs whose worker process on this host is gone.

    Called when a worker starts, and in a prefork pool process that replaces a
    dead one: a node (or a pool process) killed mid-job and restarted on the same
    host does not make its jobs wait for the sweeper's LEASE_TIMEOUT_S. Each dead
    run's attempt counts, as the sweeper's recovery would count it; a live process
    or another host's is never touched.
    """
    host = socket.gethostname()
    with session_scope() as session:
        rows = running_jobs_on_host(session=session, host=host)
    released = 0
    for row in rows:
        if not holder_is_dead(row.worker):
            continue
        with session_scope() as session:
            status = release_dead_run(
                session=session,
                job_id=row.id,
                holder=row.worker,
                attempt=row.attempts,
                max_attempts=get_settings().max_attempts,
            )
        if status is None:
            continue
        released += 1
        log.warning(
            "job %s: the process running attempt %d (%s) died; %s",
            row.id,
            row.attempts,
            row.worker,
            "running it again now" if status == js.QUEUED else f"job {status}",
            extra={"job_id": str(row.id), "attempt": row.attempts, "event": "taken_over"},
        )
        if status == js.QUEUED:
            enqueue_job(row.id)
    return released


def _fit(upstream: TabPFNUpstream, job: Job, train: pd.DataFrame) -> tuple[FittedModel, dict]:
    """Fit upstream; the model row is returned unsaved, to store with the outcome."""
    X, y = split_train(train)
    options = job.params.get("options", {})
    fitted = upstream.fit(task=job.task, X=X, y=y, options=options)
    model = FittedModel(
        id=uuid.uuid4(),
        user_id=job.user_id,
        fit_job_id=job.id,
        task=job.task,
        options=options,
        upstream_model_id=fitted.upstream_model_id,
        columns=list(X.columns),
        # Stored as text (payloads: text or float64): a predict sends them as text too.
        text_columns=[c for c in X.columns if not is_numeric_dtype(X[c].dtype)],
        # Sorted as np.unique sorts: the order of the upstream's probability columns.
        classes=np.unique(y.to_numpy()).tolist() if job.task == js.CLASSIFICATION else None,
        n_rows=len(X),
        n_features=X.shape[1],
    )
    return model, fitted.timings


def _refit(upstream: TabPFNUpstream, model: FittedModel, token: str) -> dict | None:
    """Fit a model again from its retained training data after the upstream lost it."""
    with session_scope() as session:
        parquet = training_data(session=session, fit_job_id=model.fit_job_id)
        train = decode_table(parquet) if parquet else None
    if train is None:
        raise ModelNotFound(
            "The fitted model no longer exists in the TabPFN account and its training data "
            "has been deleted (retention); fit it again."
        )
    X, y = split_train(train)
    upstream.pace(pacing.calls_for(js.FIT))
    fitted = upstream.fit(task=model.task, X=X, y=y, options=model.options)
    model.upstream_model_id = fitted.upstream_model_id
    with session_scope() as session:
        pointed = set_upstream_model_id(
            session=session, model_id=model.id, upstream_model_id=fitted.upstream_model_id
        )
    if not pointed:
        # Deleted while it was fitted again: the new copy would stay in the owner's
        # TabPFN account for good, and the predict would answer for a deleted model.
        delete_upstream_model(token, fitted.upstream_model_id)
        raise ModelNotFound(f"Model {model.id} was deleted while this job ran; fit it again.")
    return fitted.timings


def _predict(
    upstream: TabPFNUpstream, model: FittedModel, X: pd.DataFrame, params: dict
) -> tuple[dict[str, Any], dict | None]:
    """Upstream predictions shaped into our result."""
    output = params["output"]
    call = {
        "task": model.task,
        "upstream_model_id": model.upstream_model_id,
        "X": X,
        "options": model.options,
    }
    if model.task == js.CLASSIFICATION:
        classes = model.classes or []
        if output == "probabilities":
            p = upstream.predict(**call, output_type="probas")
            probabilities = np.asarray(p.values, dtype=float)
            labels = [classes[i] for i in probabilities.argmax(axis=1)]
            return {
                "predictions": labels,
                "probabilities": as_list(probabilities),
                "classes": classes,
            }, p.timings
        p = upstream.predict(**call, output_type="preds")
        # Labels come back through JSON: map them onto the classes in the user's type.
        lookup = {c: c for c in classes}
        return {
            "predictions": [lookup.get(v, v) for v in as_list(p.values)],
            "classes": classes,
        }, p.timings
    if output == "quantiles":
        quantiles = params["quantiles"]
        # The point prediction is the median: asked for in the same call when the
        # user did not ask for it (the middle of [0.05, 0.95] is no prediction).
        asked = quantiles if 0.5 in quantiles else [*quantiles, 0.5]
        p = upstream.predict(**call, output_type="quantiles", quantiles=asked)
        per_quantile = as_list(p.values)
        return {
            "predictions": per_quantile[asked.index(0.5)],
            "quantiles": {str(q): v for q, v in zip(quantiles, per_quantile, strict=False)},
        }, p.timings
    p = upstream.predict(**call, output_type=output)
    return {"predictions": as_list(p.values)}, p.timings


# A fit-predict whose predict meets a full upstream rate window waits in place for
# at most this long (a minute window's worth, and a margin) instead of being handed
# back: a hand-back throws its fit away and the rerun fits again, the costly upstream
# call (in section 9's burst, 3 of 61 fits were made twice). Longer waits (an hour
# window) and waits past the job's deadline hand the job back as before.
WAIT_IN_PLACE_MAX_S = 75.0


class _NoBudgetYet(Exception):
    """The token's window has no room for a fit-predict's predict before the in-place
    wait's bound (or the node began to drain): the job waits in the queue instead."""

    def __init__(self, until: datetime) -> None:
        super().__init__(f"no upstream budget for the prediction until {until.isoformat()}")
        self.until = until


def _may_wait_in_place(lease: Lease, until: datetime) -> bool:
    """Whether a wait until `until` is short enough to hold the job's slot for."""
    return until.timestamp() - time.time() <= min(WAIT_IN_PLACE_MAX_S, lease.remaining_s() / 2)


def _await_predict_budget(
    lease: Lease, upstream: TabPFNUpstream, loaded: _Loaded, *, retry: bool = False
) -> None:
    """Move the predict's and its upload's entries in the token's log from the claim to
    now, waiting in place while the window has no room for them (docs/scheduling.md).

    The claim reserved them; the fit between took seconds to minutes on the real
    cloud. Without this, a window's worth of later claims could be admitted while
    this prediction is still to be sent, and meet a 429. `retry`: the prediction is
    sent again after a 429's wait, so its entries move to the new call whatever the
    fit took (a claim that named no reservation reserves the call afresh).
    """
    reservation = lease.claim.reservation
    if reservation is None or not loaded.fingerprint:
        if retry:
            upstream.pace(pacing.calls_for(js.PREDICT))
        return
    if not retry and time.monotonic() - lease.held_at < pacing.MARGIN_S:
        return  # a quick fit: the claim's stamp is as close to the call as the margin
    entries = pacing.calls_after_fit(reservation)
    while (until := _restamp(loaded.fingerprint, entries)) is not None:
        if not _may_wait_in_place(lease, until) or not _sleep_until(lease, until):
            raise _NoBudgetYet(until)  # too long a wait, or the node is draining


def _restamp(fingerprint: str, entries: dict[str, str]) -> datetime | None:
    try:
        return pacing.restamp(fingerprint, entries)
    except redis.RedisError as exc:
        # The budget lives in Redis; a job half done is not failed for its refinement.
        # The claim's stamps stand, and a 429 that follows is a wait, as ever.
        log.warning(
            "upstream budget not checked before a prediction: Redis unavailable (%s)",
            type(exc).__name__,
        )
        return None


def _predict_after_fit(
    lease: Lease, upstream: TabPFNUpstream, loaded: _Loaded, model: FittedModel
) -> tuple[dict[str, Any], dict | None]:
    """A fit-predict's predict step, when its token's window has room for it; a full
    rate window met anyway is waited out in place."""
    _await_predict_budget(lease, upstream, loaded)
    while True:
        try:
            return _predict(upstream, model, loaded.test, loaded.job.params)
        except Exception as exc:
            fault = classify_fault(exc)
            until = fault.wait_until if fault is not None else None
            if until is None or not _may_wait_in_place(lease, until):
                raise  # handed back by _handle_failure, to run again from its fit
            with session_scope() as session:
                _hold_back_the_token(session, lease.claim, loaded, until, in_place=True)
            if not _sleep_until(lease, until):
                raise  # the node is draining: handed back (its fit is lost, as before)
            _await_predict_budget(lease, upstream, loaded, retry=True)


def _sleep_until(lease: Lease, until: datetime) -> bool:
    """Sleep until `until`; False if the node began to drain meanwhile. A claim lost
    meanwhile (the job canceled, taken over or timed out) raises ClaimLost."""
    while (left := until.timestamp() - time.time()) > 0:
        if draining.wait(min(left, 0.5)):
            return False
        if lease.lost:
            raise ClaimLost
    return True


def _deleted_meanwhile(model: FittedModel) -> bool:
    with session_scope() as session:
        return not model_exists(session=session, model_id=model.id)


def _model_gone(exc: Exception) -> bool:
    fault = classify_fault(exc)
    return fault is not None and isinstance(fault.error, ModelNotFound)


def _execute(lease: Lease, loaded: _Loaded) -> None:
    claim = lease.claim
    job = loaded.job
    # The claim reserved the job's calls; a refit or extra predict chunks reserve theirs.
    upstream = TabPFNUpstream(
        loaded.token,
        deadline_s=lease.remaining_s(),
        fingerprint=loaded.fingerprint,
        steps_begun=loaded.steps_begun,
        check=lease.check,
    )
    timings: dict[str, Any] = {}
    model, new_model = loaded.model, None
    result: dict[str, Any] = {}

    # The claim entered the first stage (fitting, or predicting for a predict job).
    if job.type in (js.FIT, js.FIT_PREDICT):
        new_model, timings["fit"] = _fit(upstream, job, loaded.train)
        model = new_model
        result = {
            "model_id": str(model.id),
            "task": job.task,
            "n_rows": model.n_rows,
            "n_features": model.n_features,
        }
        if model.classes is not None:
            result["classes"] = model.classes

    if job.type in (js.PREDICT, js.FIT_PREDICT):
        if job.type == js.FIT_PREDICT:
            lease.enter(js.STAGE_PREDICTING)
        try:
            if job.type == js.FIT_PREDICT:
                prediction, timings["predict"] = _predict_after_fit(lease, upstream, loaded, model)
            else:
                prediction, timings["predict"] = _predict(upstream, model, loaded.test, job.params)
        except Exception as exc:
            if job.type != js.PREDICT:
                raise
            if _deleted_meanwhile(model):
                # Whatever the upstream said (its copy went with the model): the model
                # is gone, and a refit would make again what its owner deleted.
                raise ModelNotFound(
                    f"Model {model.id} was deleted while this job ran; fit it again."
                ) from exc
            if not _model_gone(exc):
                raise
            log.info("job %s: model %s gone upstream; refitting", job.id, model.id)
            lease.enter(js.STAGE_FITTING)
            timings["refit"] = _refit(upstream, model, loaded.token)
            lease.enter(js.STAGE_PREDICTING)
            prediction, timings["predict"] = _predict(upstream, model, loaded.test, job.params)
            prediction["refitted"] = True
        if job.type == js.FIT_PREDICT:
            prediction["model_id"] = result["model_id"]
        result = prediction

    # Storing takes milliseconds: the statement that stores the result ends the job.
    # It is one statement, committed on its own (no BEGIN and COMMIT round trips),
    # unless the job has a callback: its webhook event is written in the same
    # transaction, so the end and the event are stored together or not at all.
    with session_scope(autocommit=not job.callback_url) as session:
        stored = succeed_job(
            session=session, claim=claim, result=result, model=new_model, timings=timings
        )
        if not stored:
            session.rollback()
            raise ClaimLost


# How many slots of this process are serving a wake-up (claiming or running jobs).
_serving = 0
_serving_lock = threading.Lock()


@contextmanager
def _serving_slot() -> Iterator[bool]:
    """Count this slot in while it serves; True when no other slot of the process is serving."""
    global _serving
    with _serving_lock:
        _serving += 1
        alone = _serving == 1
    try:
        yield alone
    finally:
        with _serving_lock:
            _serving -= 1


def _prefetch(job_id: uuid.UUID | None, *, alone: bool) -> Future[_Loaded] | None:
    """Start reading the job a wake-up names while the claim runs, if the slot is `alone`.

    The scheduler, not the message, decides which job a slot runs, but on an
    idle node the slot woken by a submit nearly always claims that submit's
    job: its rows and tables are then read during the claim instead of after it
    (measured in session 15, about nothing off the job's latency: the read and
    the claim share the interpreter lock and two cores). A job's
    data and parameters do not change once submitted, so what was read before
    the claim is what would be read after it. A read for a job another slot
    claimed is dropped. While other slots claim and run jobs a miss is likely
    (a backlog's head is seldom the job that woke this slot) and its CPU would
    be taken from them, so only a slot alone in its process guesses.
    """
    if job_id is None or not alone:
        return None
    return decoder_pool().submit(_load, job_id)


def _read(job_id: uuid.UUID, prefetched: Future[_Loaded] | None) -> _Loaded:
    """The claimed job's rows as tables: those read during the claim, else read now."""
    return prefetched.result() if prefetched is not None else _load(job_id)


def serve(*, fan_out: bool, job_id: uuid.UUID | None = None) -> int:
    """A wake-up: run jobs by the scheduler's policy until none can be claimed; how many ran.

    `job_id` is the job whose submit sent the wake-up, if any (see `_prefetch`).

    `fan_out` for a wake-up that stands for a backlog rather than one job (a
    token's window reopened for many queued jobs, the sweeper found work
    nobody looked at): a slot runs what it claims one job after another, so
    such a backlog would drain through one slot. Each claim then wakes one more
    slot while runnable work remains (the claim says so, at no extra cost), which
    spreads the backlog over free slots within milliseconds. A submit's own
    message stands for its job only: no fan-out, no extra message per job.
    """
    with _serving_slot() as alone:
        return _serve(fan_out=fan_out, prefetched=_prefetch(job_id, alone=alone), job_id=job_id)


# A slot serving one wake-up goes back to Celery after this long, waking another slot
# first: the tasks queued behind a backlog (the sweeper, which frees a dead node's
# runs; webhook deliveries; retention) then get a slot. Serving until nothing was
# claimable, a node whose every slot had a backlog never ran them, for hours.
SERVE_TURN_S = 30.0


def _serve(*, fan_out: bool, prefetched: Future[_Loaded] | None, job_id: uuid.UUID | None) -> int:
    ran = 0
    turn_ends = time.monotonic() + SERVE_TURN_S
    last_claimed: uuid.UUID | None = None
    while not draining.is_set():
        if last_claimed is not None and time.monotonic() > turn_ends:
            # The backlog goes on in a slot that takes its turn after them, woken by a
            # message that names a job: one that does not fan out (a pure wake-up would,
            # one more message per claim, and the queue would grow with the backlog).
            enqueue_job(last_claimed)
            return ran
        # A slot alone, woken by a submit (it reads that job ahead), expects to claim
        # that job: its first look takes the first free user and its lock at once.
        pick = claim_next(first_free=prefetched is not None and not fan_out)
        for paused in pick.paused:
            wake_at(paused.until)  # the token's window reopens: someone must look again
        if pick.claim is None:
            return ran
        if fan_out and pick.more:
            wake_now()
        hit = prefetched if pick.claim.job_id == job_id else None
        prefetched = None
        last_claimed = pick.claim.job_id
        outcome = run_claimed(pick.claim, prefetched=hit)
        ran += 1
        if outcome.retry_in_s is not None:
            # The job row is queued again with run_after set; this is its wake-up call.
            # Should the message be lost, the sweeper sends another.
            enqueue_job(pick.claim.job_id, countdown=outcome.retry_in_s)
    return ran


def run_claimed(claim: Claim, *, prefetched: Future[_Loaded] | None = None) -> RunOutcome:
    """Run a claimed job to its end; `prefetched`, its rows already being read (`_prefetch`)."""
    job_id = claim.job_id
    log.info(
        "job %s: claimed (attempt %d)",
        job_id,
        claim.attempt,
        extra={"job_id": str(job_id), "attempt": claim.attempt, "event": "claimed"},
    )
    loaded: _Loaded | None = None
    lease: Lease | None = None
    try:
        with holding(claim) as lease:
            loaded = lease.loaded = _read(job_id, prefetched)
            _execute(lease, loaded)
    except ClaimLost:
        _refund_unsent(claim, lease)
        # Canceled, re-queued by the sweeper, or past its deadline: this outcome is not wanted.
        log.info(
            "job %s: claim lost (canceled, taken over or timed out); outcome discarded", job_id
        )
        return RunOutcome()
    except SoftTimeLimitExceeded:  # the prefork pool's own limit, should anyone choose it
        _refund_unsent(claim, lease)
        return _finish_failed(
            claim,
            ServiceError(
                "The job ran longer than this service allows (RUNNING_TIMEOUT_S) and was stopped."
            ),
            code=TIME_LIMIT_CODE,
        )
    except Exception as exc:
        _refund_unsent(claim, lease)
        if lease is not None and lease.timed_out:
            return RunOutcome()  # the keeper failed it at its deadline already
        return _handle_failure(claim, exc, loaded)
    log.info(
        "job %s: succeeded",
        job_id,
        extra={"job_id": str(job_id), "attempt": claim.attempt, "event": "succeeded"},
    )
    return RunOutcome()


def _refund_unsent(claim: Claim, lease: Lease | None) -> None:
    """A run that ended early gives back the reserved calls it never sent; once per run
    (its `lease`, which holds its rows once read): a drain's hand-back does it for the
    runs it hands back, whose threads are still in a call when the process exits, and a
    thread that returns first finds it done.
    Best effort: a Redis or a database that does not answer leaves the entries to
    leave the window as they would have."""
    if claim.reservation is None:
        return
    loaded: _Loaded | None = None
    if lease is not None:
        with lease.refund_lock:
            if lease.refunded:
                return
            lease.refunded = True
        loaded = lease.loaded
    try:
        if loaded is not None:
            fingerprint, job_type, sent = loaded.fingerprint, loaded.job.type, loaded.steps_begun
        else:  # its rows could not be read (its model or data deleted): nothing was sent
            with session_scope(autocommit=True) as session:
                found = type_and_token(session=session, job_id=claim.job_id)
            if found is None:
                return
            job_type, token_encrypted = found
            fingerprint, sent = token_fingerprint(decrypt_secret(token_encrypted)), set()
        pacing.refund_unsent(fingerprint, job_type, reservation=claim.reservation, sent=sent)
    except Exception as exc:  # noqa: BLE001 - never a reason to fail the run's own ending
        log.warning("unsent upstream calls not given back (%s)", type(exc).__name__)


def hand_back_in_flight() -> int:
    """Give every job this process still runs back to the queue (shutdown past its grace),
    those whose claim has just committed included; how many."""
    for lease in keeper().held():
        lease.lost = True  # whatever its thread does next is not wanted
    with session_scope() as session:
        handed = hand_back_runs_of(session=session, worker=this_worker())
    back = set(handed)
    for lease in keeper().held():
        if lease.claim.job_id in back:
            # Its thread is likely in a call the exit cuts short: its own refund never
            # came, and the rerun reserved the same calls again.
            _refund_unsent(lease.claim, lease)
    for job_id in handed:
        enqueue_job(job_id)
    return len(handed)


def retry_delay(attempt: int) -> float:
    """Exponential backoff with jitter, so retries of many jobs do not arrive together."""
    settings = get_settings()
    ceiling = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def _wait_for_window(
    claim: Claim, loaded: _Loaded, until: datetime, *, met_429: bool = True
) -> RunOutcome:
    """The token's window is full: the job waits for it, its user's other jobs too.

    `met_429`: the upstream said so. Otherwise the token's own log did (a
    fit-predict's prediction found no room before the in-place bound, or its node
    began to drain): the log already holds the token's other calls back, so it is
    not closed for every kind of call as after a 429."""
    with session_scope() as session:
        if not wait_for_window(session=session, claim=claim, until=until):
            return RunOutcome()  # canceled or taken over meanwhile
        # With the hand-back, in one commit.
        _hold_back_the_token(session, claim, loaded, until, in_place=False, met_429=met_429)
    return RunOutcome()


def _hold_back_the_token(
    session: Session,
    claim: Claim,
    loaded: _Loaded,
    until: datetime,
    *,
    in_place: bool,
    met_429: bool = True,
) -> None:
    """The token's window is full until `until`: the user's other jobs wait (paused in
    the scheduler; after a 429, the token's budget counted spent) and a slot looks
    again then. `in_place`: the job itself waits in its slot rather than in the queue."""
    pause_user(session=session, user_id=loaded.job.user_id, until=until)
    if met_429:
        pacing.exhaust(loaded.fingerprint, until)
    wake_at(until)  # a wake-up for later: sent now, harmless should the commit fail
    log.info(
        "job %s: %s; waits %suntil %s",
        claim.job_id,
        "upstream rate window full"
        if met_429
        else "no room in the token's rate window for its prediction",
        "in place (its fit kept) " if in_place else "",
        until.isoformat(),
        extra={
            "job_id": str(claim.job_id),
            "attempt": claim.attempt,
            "until": until.isoformat(),
            "event": "waiting",
        },
    )


def _handle_failure(claim: Claim, exc: Exception, loaded: _Loaded | None) -> RunOutcome:
    if isinstance(exc, _NoBudgetYet) and loaded is not None:
        return _wait_for_window(claim, loaded, exc.until, met_429=False)
    fault = None if isinstance(exc, ServiceError) else classify_fault(exc)
    if fault is not None and fault.wait_until is not None and loaded is not None:
        return _wait_for_window(claim, loaded, fault.wait_until)
    if isinstance(exc, ServiceError):
        error, transient = exc, False
    elif isinstance(exc, OperationalError | InterfaceError):
        # The database connection broke mid-job (restart, failover): run it again.
        # Should recording that fail too, the lease runs out and the sweeper does it.
        error = ServiceUnavailable(f"The database was briefly unavailable ({type(exc).__name__}).")
        transient = True
    elif fault is not None:
        error, transient = fault.error, fault.transient
    else:
        log.exception("job %s: unexpected error", claim.job_id)
        error = ServiceError("The job failed on an unexpected error; it has been logged.")
        transient = False
    if transient and claim.attempt < get_settings().max_attempts:
        delay = retry_delay(claim.attempt)
        with session_scope() as session:
            requeued = requeue_job(
                session=session, claim=claim, code=error.code, message=error.message, delay_s=delay
            )
        log.warning(
            "job %s: %s (%s); retry in %.1fs",
            claim.job_id,
            error.code,
            error.message,
            delay,
            extra={
                "job_id": str(claim.job_id),
                "attempt": claim.attempt,
                "code": error.code,
                "retry_in_s": round(delay, 1),
                "event": "retry",
            },
        )
        return RunOutcome(retry_in_s=delay if requeued else None)
    return _finish_failed(claim, error, code=error.code)


def _finish_failed(claim: Claim, error: ServiceError, *, code: str) -> RunOutcome:
    with session_scope() as session:
        fail_job(session=session, claim=claim, code=code, message=error.message)
    log.warning(
        "job %s: failed with %s",
        claim.job_id,
        code,
        extra={
            "job_id": str(claim.job_id),
            "attempt": claim.attempt,
            "code": code,
            "event": "failed",
        },
    )
    return RunOutcome()
