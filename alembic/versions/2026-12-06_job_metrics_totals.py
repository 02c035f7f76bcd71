"""Finished-job totals for /metrics, so a scrape reads a few rows

Revision ID: 0004_job_metrics_totals
Revises: 0003_scheduling
Create Date: 2026-12-06

A scrape aggregated every finished job's row for its duration histograms (about
10 s with 500,000 jobs). Now a job that enters a finished status leaves its id
in `jobs_finished_uncounted` (a trigger, in the job's own transaction), and
`fold_finished_jobs()` moves those jobs into two small total tables: every
scrape calls it first, and so does the hourly retention sweep, so the log holds
at most the jobs finished since. One row per key: concurrent folds (several API
processes scraping) already take turns on the log's rows, and only folds write
the totals, so spreading a key over several rows would spare no wait.

Why a log of ids and not the totals themselves in the trigger: the trigger runs in
the statement that ends a job, on every job's path to its result. Adding to the
totals there (two upserts through the duration functions) cost 1.1-1.3 ms per job
end against 0.15-0.25 ms without a trigger; writing the id costs 0.05-0.1 ms.

Existing finished jobs are counted once here. The trigger is created first: its
lock on `jobs` holds back any job finishing meanwhile until this commits, and that
job's id is then in the log; none is missed or counted twice. The jobs table is
read once, so this migration takes about as long as one old scrape did.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_job_metrics_totals"
down_revision: str | None = "0003_scheduling"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Must equal shared.core.metrics.BUCKETS (a test compares them).
BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
FINISHED = "('succeeded', 'failed', 'canceled')"

_FUNCTIONS = f"""
-- The histograms' upper bounds (seconds); a duration above the last is in +Inf.
CREATE FUNCTION job_duration_bounds() RETURNS float8[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY[{", ".join(map(str, BUCKETS))}]::float8[]
$$;

-- The bucket a duration is counted in: the smallest bound it does not exceed.
CREATE FUNCTION job_duration_le(seconds float8) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(min(le), 'Infinity') FROM unnest(job_duration_bounds()) AS le
    WHERE seconds <= le
$$;

-- One upstream-reported time; 0 when absent or not a number (never an error).
CREATE FUNCTION job_timing(timings jsonb, path text[]) RETURNS float8
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(timings #> path) = 'number'
                THEN (timings #>> path)::float8 ELSE 0 END
$$;

-- A finished job's durations: queue wait spans earlier attempts and retry backoffs;
-- run is the last attempt; upstream is what the upstream reported for its fit
-- (and any refit) and every stage of the prediction, when it reported any.
CREATE FUNCTION job_durations(
    created_at timestamptz, started_at timestamptz, finished_at timestamptz, timings jsonb
) RETURNS TABLE (metric text, seconds float8) LANGUAGE sql IMMUTABLE AS $$
    SELECT 'queue_wait', extract(epoch FROM started_at - created_at)::float8
    UNION ALL
    SELECT 'run', extract(epoch FROM finished_at - started_at)::float8
    UNION ALL
    SELECT 'upstream',
           job_timing(timings, '{{fit,elapsed_s}}') + job_timing(timings, '{{refit,elapsed_s}}')
           + job_timing(timings, '{{predict,test_set_transform_queue_wait_s}}')
           + job_timing(timings, '{{predict,test_set_transform_s}}')
           + job_timing(timings, '{{predict,predict_queue_wait_s}}')
           + job_timing(timings, '{{predict,predict_s}}')
    WHERE timings IS NOT NULL
$$;

-- Add finished jobs to the totals, keys in order.
-- Only safe casts above: counting must never make a job's update fail.
CREATE FUNCTION add_finished_jobs(finished jobs[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO job_outcome_totals AS t (type, status, error_code, jobs)
    SELECT j.type, j.status, coalesce(j.error_code, ''), count(*)
    FROM unnest(finished) AS j
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (type, status, error_code) DO UPDATE SET jobs = t.jobs + excluded.jobs;

    INSERT INTO job_duration_totals AS t (metric, type, status, le, jobs, seconds)
    SELECT d.metric, j.type, j.status, job_duration_le(d.seconds), count(*), sum(d.seconds)
    FROM unnest(finished) AS j,
         LATERAL job_durations(j.created_at, j.started_at, j.finished_at, j.upstream_timings) AS d
    WHERE j.started_at IS NOT NULL AND d.seconds IS NOT NULL
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (metric, type, status, le)
    DO UPDATE SET jobs = t.jobs + excluded.jobs, seconds = t.seconds + excluded.seconds;
$$;

-- Per row, and only for a row that enters a finished status (the WHEN below): every
-- other update of a job (claims, heartbeats, stages) runs no trigger at all. A
-- statement-level trigger with transition tables cost about 1 ms on each of them.
-- Only the id: the counting waits for the next fold, off the job's path.
CREATE FUNCTION count_finished_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobs_finished_uncounted (job_id) VALUES (NEW.id);
    RETURN NULL;
END
$$;

-- Move the jobs finished since the last fold into the totals; how many it counted.
-- Concurrent folds never count a job twice: each logged id is deleted by one of them
-- (a second waits on the first's row locks, then finds those rows gone).
CREATE FUNCTION fold_finished_jobs() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    finished jobs[];
BEGIN
    WITH moved AS (DELETE FROM jobs_finished_uncounted RETURNING job_id)
    SELECT array_agg(j) INTO finished FROM jobs AS j WHERE j.id IN (SELECT job_id FROM moved);
    IF finished IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM add_finished_jobs(finished);
    RETURN cardinality(finished);
END
$$;
"""

_TRIGGERS = f"""
CREATE TRIGGER jobs_count_finished_on_update AFTER UPDATE OF status ON jobs FOR EACH ROW
WHEN (OLD.status NOT IN {FINISHED} AND NEW.status IN {FINISHED})
EXECUTE FUNCTION count_finished_job();

CREATE TRIGGER jobs_count_finished_on_insert AFTER INSERT ON jobs FOR EACH ROW
WHEN (NEW.status IN {FINISHED})
EXECUTE FUNCTION count_finished_job();
"""

_BACKFILL = f"""
INSERT INTO job_outcome_totals (type, status, error_code, jobs)
SELECT type, status, coalesce(error_code, ''), count(*)
FROM jobs WHERE status IN {FINISHED}
GROUP BY 1, 2, 3;

INSERT INTO job_duration_totals (metric, type, status, le, jobs, seconds)
SELECT d.metric, j.type, j.status, job_duration_le(d.seconds), count(*), sum(d.seconds)
FROM jobs AS j,
     LATERAL job_durations(j.created_at, j.started_at, j.finished_at, j.upstream_timings) AS d
WHERE j.status IN {FINISHED} AND j.started_at IS NOT NULL AND d.seconds IS NOT NULL
GROUP BY 1, 2, 3, 4;
"""


def upgrade() -> None:
    op.create_table(
        "job_outcome_totals",
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error_code", sa.String(length=50), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("type", "status", "error_code", name=op.f("pk_job_outcome_totals")),
    )
    op.create_table(
        "job_duration_totals",
        sa.Column("metric", sa.String(length=20), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("le", sa.Float(), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "metric", "type", "status", "le", name=op.f("pk_job_duration_totals")
        ),
    )
    # No key: rows are only appended by the trigger and deleted whole by a fold.
    op.create_table(
        "jobs_finished_uncounted",
        sa.Column("job_id", postgresql.UUID(as_uuid=True), nullable=False),
    )
    op.execute(_FUNCTIONS)
    op.execute(_TRIGGERS)
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_count_finished_on_insert ON jobs")
    op.execute("DROP TRIGGER jobs_count_finished_on_update ON jobs")
    op.execute("DROP FUNCTION fold_finished_jobs()")
    op.execute("DROP FUNCTION count_finished_job()")
    op.execute("DROP FUNCTION add_finished_jobs(jobs[])")
    op.execute("DROP FUNCTION job_durations(timestamptz, timestamptz, timestamptz, jsonb)")
    op.execute("DROP FUNCTION job_timing(jsonb, text[])")
    op.execute("DROP FUNCTION job_duration_le(float8)")
    op.execute("DROP FUNCTION job_duration_bounds()")
    op.drop_table("job_duration_totals")
    op.drop_table("job_outcome_totals")
    op.drop_table("jobs_finished_uncounted")
