"""/metrics' job numbers (shared/core/metrics.py) from the totals that finished jobs
are folded into (migration 0004_job_metrics_totals): the same numbers as counting
every job row, at a cost that does not grow with the number of finished jobs, and
almost nothing added to the statement that ends a job."""

from __future__ import annotations

import importlib.util
import json
import uuid

import pytest
from sqlalchemy import text

from cli.main import REPO_ROOT
from shared.core import metrics
from shared.core.metrics import BUCKETS, Histogram
from tests.support.factories import make_user

FINISHED = ("succeeded", "failed", "canceled")

# What a scrape computed before the totals: every finished job's row, bucketed in SQL.
_ROW_DURATIONS = {
    "queue_wait": "extract(epoch FROM started_at - created_at)::float8",
    "run": "extract(epoch FROM finished_at - started_at)::float8",
    "upstream": """CASE WHEN upstream_timings IS NOT NULL THEN
        coalesce((upstream_timings #>> '{fit,elapsed_s}')::float8, 0)
        + coalesce((upstream_timings #>> '{refit,elapsed_s}')::float8, 0)
        + coalesce((upstream_timings #>> '{predict,test_set_transform_queue_wait_s}')::float8, 0)
        + coalesce((upstream_timings #>> '{predict,test_set_transform_s}')::float8, 0)
        + coalesce((upstream_timings #>> '{predict,predict_queue_wait_s}')::float8, 0)
        + coalesce((upstream_timings #>> '{predict,predict_s}')::float8, 0) END""",
}


def _histograms_from_rows(session) -> dict[str, dict[tuple[str, str], Histogram]]:
    result: dict[str, dict[tuple[str, str], Histogram]] = {name: {} for name in _ROW_DURATIONS}
    for name, seconds in _ROW_DURATIONS.items():
        buckets = ", ".join(f"count(*) FILTER (WHERE {seconds} <= {le})" for le in BUCKETS)
        rows = session.execute(
            text(
                f"SELECT type, status, {buckets}, count({seconds}), coalesce(sum({seconds}), 0) "
                "FROM jobs WHERE status IN ('succeeded', 'failed', 'canceled') "
                "AND started_at IS NOT NULL GROUP BY type, status"
            )
        )
        for type_, status, *values in rows:
            result[name][(type_, status)] = Histogram(
                buckets=list(values[: len(BUCKETS)]), count=values[-2], total=float(values[-1])
            )
    return result


def _add_job(session, user_id, *, type_, status, queued_s, run_s, timings, error_code=None):
    """A job as the service leaves it: inserted queued, claimed, then ended by an UPDATE
    (the trigger's path); times in seconds relative to its start."""
    job_id = uuid.uuid4()
    session.execute(
        text(
            "INSERT INTO jobs (id, user_id, type, status, task, params, attempts, created_at) "
            "VALUES (:id, :user_id, :type, 'queued', 'classification', '{}', 0, "
            "now() - make_interval(secs => :queued_s + :run_s))"
        ),
        {
            "id": job_id,
            "user_id": user_id,
            "type": type_,
            "queued_s": queued_s,
            "run_s": run_s or 0,
        },
    )
    if run_s is None:  # canceled while queued: never started
        session.execute(
            text("UPDATE jobs SET status = :status, finished_at = now() WHERE id = :id"),
            {"id": job_id, "status": status},
        )
        return
    session.execute(
        text(
            "UPDATE jobs SET status = 'running', attempts = 1, "
            "started_at = now() - make_interval(secs => :run_s) WHERE id = :id"
        ),
        {"id": job_id, "run_s": run_s},
    )
    session.execute(
        text(
            "UPDATE jobs SET status = :status, finished_at = now(), error_code = :code, "
            "upstream_timings = CAST(:timings AS jsonb) WHERE id = :id"
        ),
        {
            "id": job_id,
            "status": status,
            "code": error_code,
            "timings": None if timings is None else json.dumps(timings),
        },
    )


def _assert_same(found, expected) -> None:
    """Histograms equal; their sums of seconds up to the order they were added in."""
    assert found.keys() == expected.keys()
    for name in expected:
        assert found[name].keys() == expected[name].keys(), name
        for key, histogram in expected[name].items():
            got = found[name][key]
            assert (got.buckets, got.count) == (histogram.buckets, histogram.count), (name, key)
            assert got.total == pytest.approx(histogram.total, rel=1e-12, abs=1e-9), (name, key)


def _fold(session) -> int:
    return session.execute(text("SELECT fold_finished_jobs()")).scalar_one()


def _scrape_reads(session) -> metrics.Snapshot:
    _fold(session)  # as read_snapshot does first
    return metrics.Snapshot(
        jobs=metrics._job_counts(session),
        errors=metrics._error_counts(session),
        durations=metrics._duration_histograms(session),
    )


def test_the_trigger_buckets_durations_at_the_scrapes_bounds(session):
    bounds = session.execute(text("SELECT job_duration_bounds()")).scalar_one()
    assert bounds == [float(le) for le in BUCKETS]
    # The migration is frozen with its own copy: it must say the same.
    path = REPO_ROOT / "alembic" / "versions" / "2026-12-06_job_metrics_totals.py"
    spec = importlib.util.spec_from_file_location("job_metrics_totals", path)
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.BUCKETS == BUCKETS


def test_histograms_and_counts_equal_a_count_over_every_job_row(session):
    user = make_user(session=session)
    # Durations on and around the bounds, past the last one, and every timing shape.
    runs = [0.05, 0.1, 0.3, 1.0, 2.4999, 7, 29.5, 61, 299, 1799.99, 3600, 5000]
    timings = [
        None,
        {"fit": {"elapsed_s": 0.7}},
        {"fit": {"elapsed_s": 1.5}, "refit": {"elapsed_s": 0.25}},
        {"predict": {"predict_s": 0.2, "predict_queue_wait_s": 3.0, "test_set_transform_s": 0.1}},
        {"fit": {"elapsed_s": 4000.0}},
    ]
    types = ["fit", "predict", "fit_predict"]
    for i, run_s in enumerate(runs * 3):
        status = FINISHED[i % 3]
        _add_job(
            session,
            user.id,
            type_=types[i % 3 if i % 2 else (i + 1) % 3],
            status=status,
            queued_s=runs[(i * 5) % len(runs)] / 3,
            run_s=run_s,
            timings=timings[i % len(timings)] if status != "canceled" else None,
            error_code=("upstream_error", "worker_lost")[i % 2] if status == "failed" else None,
        )
    for _ in range(2):  # canceled while queued: counted, but in no duration
        _add_job(
            session, user.id, type_="fit", status="canceled", queued_s=1, run_s=None, timings=0
        )
    for status in ("queued", "running"):
        session.execute(
            text(
                "INSERT INTO jobs (id, user_id, type, status, task, params, attempts, error_code) "
                "VALUES (:id, :user_id, 'predict', :status, 'regression', '{}', 1, :code)"
            ),
            {
                "id": uuid.uuid4(),
                "user_id": user.id,
                "status": status,
                "code": "upstream_unavailable" if status == "queued" else None,
            },
        )

    snapshot = _scrape_reads(session)

    expected = _histograms_from_rows(session)
    _assert_same(snapshot.durations, expected)
    assert sum(h.count for h in expected["run"].values()) == 3 * len(runs)
    counts = session.execute(text("SELECT type, status, count(*) FROM jobs GROUP BY 1, 2"))
    assert snapshot.jobs == {(t, s): n for t, s, n in counts}
    errors = session.execute(
        text(
            "SELECT status, error_code, count(*) FROM jobs WHERE error_code IS NOT NULL "
            "AND status IN ('failed', 'queued') GROUP BY 1, 2"
        )
    )
    assert snapshot.errors == {(s, c): n for s, c, n in errors}


def test_a_job_inserted_finished_is_counted_once_and_a_later_update_adds_nothing(session):
    user = make_user(session=session)
    session.execute(
        text(
            "INSERT INTO jobs (id, user_id, type, status, task, params, attempts, created_at, "
            "started_at, finished_at) VALUES (:id, :user_id, 'fit', 'succeeded', "
            "'classification', '{}', 1, now() - interval '3 s', now() - interval '2 s', now())"
        ),
        {"id": uuid.uuid4(), "user_id": user.id},
    )
    session.execute(text("UPDATE jobs SET stage = NULL, updated_at = now()"))
    session.execute(text("UPDATE jobs SET status = 'succeeded'"))  # finished to finished
    snapshot = _scrape_reads(session)
    assert snapshot.jobs == {("fit", "succeeded"): 1}
    assert snapshot.durations["run"][("fit", "succeeded")].count == 1
    _assert_same(snapshot.durations, _histograms_from_rows(session))


def _rows_read_from_jobs(session) -> int:
    return session.execute(
        text(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
            "FROM pg_stat_xact_user_tables WHERE relname = 'jobs'"
        )
    ).scalar_one()


def test_a_scrape_does_not_read_the_rows_of_finished_jobs(session):
    user = make_user(session=session)
    finished = 5_000
    session.execute(
        text(
            "INSERT INTO jobs (id, user_id, type, status, task, params, attempts, created_at, "
            "started_at, finished_at) "
            "SELECT gen_random_uuid(), :user_id, (ARRAY['fit', 'predict'])[1 + i % 2], "
            "(ARRAY['succeeded', 'failed', 'canceled'])[1 + i % 3], 'classification', '{}', 1, "
            "now() - interval '1 hour', now() - make_interval(secs => i % 500), now() "
            "FROM generate_series(1, :n) AS i"
        ),
        {"user_id": user.id, "n": finished},
    )
    for status in ("queued", "running", "queued"):
        session.execute(
            text(
                "INSERT INTO jobs (id, user_id, type, status, task, params, attempts) "
                "VALUES (gen_random_uuid(), :user_id, 'fit', :status, 'classification', '{}', 0)"
            ),
            {"user_id": user.id, "status": status},
        )
    session.execute(text("ANALYZE jobs"))

    # The first fold reads each finished job once (by its id); no scrape reads it again.
    assert _fold(session) == finished
    before = _rows_read_from_jobs(session)
    snapshot = _scrape_reads(session)
    snapshot.waiting = metrics._waiting_counts(session)
    read = _rows_read_from_jobs(session) - before

    # The queued and running jobs (and index lookups around them), never the 5,000.
    assert read < 100, read
    assert sum(snapshot.jobs.values()) == finished + 3
    assert sum(h.count for h in snapshot.durations["run"].values()) == finished


def test_ending_a_job_only_logs_its_id_and_a_fold_counts_it_once(session):
    """The statement that ends a job is on its path to the caller: the trigger writes
    the job's id, no more (counting it there cost a millisecond per job end)."""
    user = make_user(session=session)
    _add_job(session, user.id, type_="fit", status="succeeded", queued_s=1, run_s=2, timings=None)
    logged = session.execute(text("SELECT count(*) FROM jobs_finished_uncounted")).scalar_one()
    totals = session.execute(text("SELECT count(*) FROM job_outcome_totals")).scalar_one()
    assert (logged, totals) == (1, 0)
    assert _fold(session) == 1
    assert _fold(session) == 0  # folded once: a second fold finds nothing
    snapshot = _scrape_reads(session)
    assert snapshot.jobs == {("fit", "succeeded"): 1}
    assert snapshot.durations["run"][("fit", "succeeded")].count == 1


def test_the_retention_sweep_folds_what_no_scrape_did(services):
    from shared.core.db import session_scope
    from tests.support.inprocess import configured
    from worker.retention import purge_expired_data

    with configured(services):
        with session_scope() as session:
            user = make_user(session=session)
            _add_job(
                session,
                user.id,
                type_="predict",
                status="failed",
                queued_s=0,
                run_s=1,
                timings=None,
                error_code="upstream_error",
            )
        purge_expired_data()
        with session_scope() as session:
            assert _fold(session) == 0
            assert session.execute(text("SELECT sum(jobs) FROM job_outcome_totals")).scalar() == 1
