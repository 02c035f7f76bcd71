"""Warm-ups run the job statements once, on real PostgreSQL and Redis, and change nothing.

shared/jobs/warm_up.py: a worker node's first burst of jobs should find every
statement compiled and every pooled connection's backend warm, and an API
process's first submit its statements compiled. These tests check that the
warm-ups write nothing, claim nothing, send nothing, leave the pool's
connections open, and cover the statements a job and a submit run (run right
after, they compile no statement of their own).
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from shared.core.db import get_engine, session_scope
from shared.core.errors import ResultNotAvailable
from shared.core.redis_client import get_redis
from shared.jobs import states as js
from shared.jobs.lifecycle import set_stage, succeed_job
from shared.jobs.repository import load_job_for_run
from shared.jobs.scheduling import claim_next
from shared.jobs.submit import JsonTable, create_fit_predict_job, get_result_json
from shared.jobs.warm_up import warm_up_job_queries, warm_up_submit
from shared.models import Base, FittedModel, Job, User
from shared.queue import get_celery, warm_up_broker
from tests.services.test_scheduling import make_jobs, make_user
from tests.support.factories import new_model
from tests.support.inprocess import configured


def _counts() -> dict[str, int]:
    with session_scope() as session:
        return {
            "users": session.scalar(select(func.count()).select_from(User)),
            "models": session.scalar(select(func.count()).select_from(FittedModel)),
            "queued": session.scalar(
                select(func.count()).select_from(Job).where(Job.status == js.QUEUED)
            ),
        }


def _statement_caches() -> list:
    """SQLAlchemy's statement caches: the engine's, and each mapper's for the ORM's own
    INSERTs and UPDATEs (a model's insert at a job's end, a job's at a submit)."""
    caches = [get_engine()._compiled_cache]
    return caches + [mapper._compiled_cache for mapper in Base.registry.mappers]


def _run_a_job_without_upstream(job_id: uuid.UUID, claim) -> None:
    """What worker.runner does around the upstream calls: load, stage, store."""
    with session_scope() as session:
        job, *_ = load_job_for_run(session=session, job_id=job_id)
    with session_scope() as session:
        assert set_stage(session=session, claim=claim, stage=js.STAGE_PREDICTING)
    model = new_model(job, columns=["x"], classes=[0, 1], n_rows=1, n_features=1)
    with session_scope() as session:
        assert succeed_job(session=session, claim=claim, result={"y": [0]}, model=model, timings={})


def test_the_warm_up_writes_nothing_and_claims_nothing(services):
    with configured(services, DB_POOL_SIZE="4", MAX_RUNNING_PER_USER="4"):
        make_jobs(make_user(), 2)
        before = _counts()
        get_engine().dispose()  # no connection open yet, as in a fresh node

        warm_up_job_queries(4)

        assert _counts() == before  # the queued jobs still queued, no user or model kept
        assert get_engine().pool.checkedin() == 4  # opened, and kept for the first jobs


def test_a_job_after_the_warm_up_compiles_no_statement_of_its_own(services):
    with configured(services, MAX_RUNNING_PER_USER="4"):
        make_jobs(make_user(), 1)
        get_engine().dispose()
        caches = _statement_caches()
        for cache in caches:
            cache.clear()

        warm_up_job_queries(2)
        warmed = [len(cache) for cache in caches]
        pick = claim_next()
        assert pick.claim is not None
        _run_a_job_without_upstream(pick.claim.job_id, pick.claim)

        assert sum(warmed) > 0
        assert [len(cache) for cache in caches] == warmed, "a job statement not warmed up"


def test_the_submit_warm_up_writes_nothing_and_covers_a_submit(services):
    with configured(services):
        owner = make_user()
        before = _counts()
        get_engine().dispose()
        caches = _statement_caches()
        for cache in caches:
            cache.clear()

        warm_up_submit()
        warmed = [len(cache) for cache in caches]
        assert _counts() == before  # the owner it made and its job rolled back
        with session_scope() as session:
            session.get(User, owner)  # how this test finds the user, compiled before the count
        warmed = [len(cache) for cache in caches]  # with the test's own statements
        with session_scope() as session:
            user = session.get(User, owner)
            job = create_fit_predict_job(
                session=session,
                user=user,
                task=js.CLASSIFICATION,
                train=JsonTable(X=[[1.0, "x"], [2.0, "y"]], y=[1, 0]),
                test=JsonTable(X=[[3.0, "x"]]),
                options={},
                output=None,
                quantiles=None,
                callback_url=None,
            )
            session.refresh(job)
            with pytest.raises(ResultNotAvailable):
                get_result_json(session=session, user=user, job_id=job.id)

        assert sum(warmed) > 0
        assert [len(cache) for cache in caches] == warmed, "a submit statement not warmed up"


def test_the_broker_warm_up_sends_nothing(services):
    with configured(services):
        get_celery.cache_clear()  # this module's REDIS_URL
        try:
            queue = get_celery().conf.task_default_queue
            before = get_redis().llen(queue)
            warm_up_broker()
            assert get_redis().llen(queue) == before
            # The pooled producer is connected, ready for the first send.
            with get_celery().producer_or_acquire() as producer:
                assert producer.connection.connected
        finally:
            get_celery.cache_clear()
