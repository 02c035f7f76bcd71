"""A worker's warm-up runs the job statements once, on real PostgreSQL, and changes nothing.

shared/jobs/warm_up.py: the node's first burst of jobs should find every
statement compiled and every pooled connection's backend warm. These tests
check that the warm-up writes nothing, claims nothing, leaves the pool's
connections open, and covers the statements a job runs (a job run right after
it compiles no statement of its own).
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from shared.core.db import get_engine, session_scope
from shared.jobs import states as js
from shared.jobs.lifecycle import set_stage, succeed_job
from shared.jobs.repository import add_model, load_job_for_run
from shared.jobs.scheduling import claim_next
from shared.jobs.warm_up import warm_up_job_queries
from shared.models import Base, FittedModel, Job, User
from tests.services.test_scheduling import make_jobs, make_user
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


def _run_a_job_without_upstream(job_id: uuid.UUID, claim) -> None:
    """What worker.runner does around the upstream calls: load, stage, store."""
    with session_scope() as session:
        job, *_ = load_job_for_run(session=session, job_id=job_id)
    with session_scope() as session:
        assert set_stage(session=session, claim=claim, stage=js.STAGE_PREDICTING)
    model = FittedModel(
        user_id=job.user_id,
        fit_job_id=job.id,
        task=js.CLASSIFICATION,
        options={},
        upstream_model_id="m",
        columns=["x"],
        classes=[0, 1],
        n_rows=1,
        n_features=1,
    )
    with session_scope() as session:
        add_model(session=session, model=model)
        assert succeed_job(
            session=session, claim=claim, result={"y": [0]}, model_id=model.id, timings={}
        )


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
        # SQLAlchemy's statement caches: the engine's, and each mapper's for the
        # ORM's own INSERTs and UPDATEs (a model's insert at the job's end).
        caches = [get_engine()._compiled_cache] + [
            mapper._compiled_cache for mapper in Base.registry.mappers
        ]
        for cache in caches:
            cache.clear()

        warm_up_job_queries(2)
        warmed = [len(cache) for cache in caches]
        pick = claim_next()
        assert pick.claim is not None
        _run_a_job_without_upstream(pick.claim.job_id, pick.claim)

        assert sum(warmed) > 0
        assert [len(cache) for cache in caches] == warmed, "a job statement not warmed up"
