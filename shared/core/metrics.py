"""Service metrics for Prometheus, read from PostgreSQL at scrape time.

Several API processes and many Celery pool processes share the work, so no
single process can count jobs in memory. Postgres holds the truth: every
scrape runs a few small queries, and every API replica reports the same
numbers (scrape one, or take `max` across them).

Finished jobs are not read row by row: a trigger logs each job's id when it
finishes, and a scrape first folds the jobs logged since the last fold into small
total tables (`fold_finished_jobs()`, migration 0004_job_metrics_totals; the hourly
retention sweep folds too), then sums those: its cost does not grow with the
number of jobs (docs/operations.md has the numbers), and finished counts behave as
counters. Only queued and running
jobs are counted from their rows (by index): as many as the queue holds.

Durations are histograms over all finished jobs: their buckets only grow, so
`rate()` over a window (say 1h) gives the recent distribution and
`histogram_quantile()` its quantiles.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from shared.core.config import get_settings
from shared.core.db import session_scope
from shared.core.redis_client import get_redis
from shared.jobs import states as js
from shared.jobs.waiting import REASONS
from shared.models import Job, JobDurationTotal, JobOutcomeTotal, WebhookDelivery

log = logging.getLogger(__name__)

PREFIX = "tabpfn_api"
JOB_TYPES = (js.FIT, js.PREDICT, js.FIT_PREDICT)
JOB_STATUSES = (js.QUEUED, js.RUNNING, js.SUCCEEDED, js.FAILED, js.CANCELED)
FINISHED_STATUSES = (js.SUCCEEDED, js.FAILED, js.CANCELED)
WEBHOOK_STATUSES = ("pending", "succeeded", "failed")
# Seconds; from sub-second emulator runs to hour-long fits. The trigger buckets
# with its own copy (job_duration_bounds() in the migration; a test compares them):
# changing these needs a migration that changes it and recounts.
BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


# The durations of finished jobs, as the trigger computes them (job_durations() in
# the migration): queue wait spans earlier attempts and retry backoffs; run is the
# last attempt.
DURATIONS = {
    "queue_wait": "Seconds finished jobs waited from submission to their last start.",
    "run": "Seconds the last run of finished jobs took in a worker.",
    "upstream": "Seconds the TabPFN upstream reported for finished jobs' fit and predict calls.",
}
LIVE_STATUSES = (js.QUEUED, js.RUNNING)


@dataclass
class Histogram:
    buckets: list[int]
    count: int
    total: float


@dataclass
class Snapshot:
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: dict[tuple[str, str], int] = field(default_factory=dict)
    durations: dict[str, dict[tuple[str, str], Histogram]] = field(default_factory=dict)
    webhooks: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    broker_queue_length: int | None = None


def _job_counts(session: Session) -> dict[tuple[str, str], int]:
    """Jobs by type and status: live ones from their rows, finished ones from the totals."""
    live = session.execute(
        select(Job.type, Job.status, func.count())
        .where(Job.status.in_(LIVE_STATUSES))
        .group_by(Job.type, Job.status)
    )
    finished = session.execute(
        select(
            JobOutcomeTotal.type, JobOutcomeTotal.status, func.sum(JobOutcomeTotal.jobs)
        ).group_by(JobOutcomeTotal.type, JobOutcomeTotal.status)
    )
    return {(type_, status): int(n) for type_, status, n in [*live, *finished]}


def _error_counts(session: Session) -> dict[tuple[str, str], int]:
    """Failed jobs (from the totals), and queued jobs waiting out a retry, by error code."""
    failed = session.execute(
        select(JobOutcomeTotal.status, JobOutcomeTotal.error_code, func.sum(JobOutcomeTotal.jobs))
        .where(JobOutcomeTotal.status == js.FAILED, JobOutcomeTotal.error_code != "")
        .group_by(JobOutcomeTotal.status, JobOutcomeTotal.error_code)
    )
    retrying = session.execute(
        select(Job.status, Job.error_code, func.count())
        .where(Job.status == js.QUEUED, Job.error_code.is_not(None))
        .group_by(Job.status, Job.error_code)
    )
    return {(status, code): int(n) for status, code, n in [*failed, *retrying]}


def _waiting_counts(session: Session) -> dict[str, int]:
    """Queued jobs by why they wait (shared.jobs.waiting's reasons, decided the same way)."""
    rows = session.execute(
        text(
            """
            SELECT CASE
                WHEN j.run_after > now() THEN coalesce(j.wait_reason, 'retry_backoff')
                WHEN u.upstream_paused_until > now() THEN 'upstream_rate_limit'
                WHEN coalesce(r.n, 0) >= :cap THEN 'fair_share'
                ELSE 'capacity'
            END AS reason, count(*)
            FROM jobs j
            JOIN users u ON u.id = j.user_id
            LEFT JOIN (SELECT user_id, count(*) AS n FROM jobs WHERE status = 'running'
                       GROUP BY user_id) r ON r.user_id = j.user_id
            WHERE j.status = 'queued'
            GROUP BY 1
            """
        ),
        {"cap": get_settings().max_running_per_user},
    )
    return {reason: n for reason, n in rows}


def _duration_histograms(session: Session) -> dict[str, dict[tuple[str, str], Histogram]]:
    """Every duration histogram, from the totals: a few rows per type and status."""
    t = JobDurationTotal
    rows = session.execute(
        select(t.metric, t.type, t.status, t.le, func.sum(t.jobs), func.sum(t.seconds)).group_by(
            t.metric, t.type, t.status, t.le
        )
    )
    # Jobs per bucket as stored (each in the one bucket it fell in), made cumulative.
    found: dict[tuple[str, str, str], list[tuple[float, int, float]]] = defaultdict(list)
    for metric, type_, status, le, n, seconds in rows:
        found[(metric, type_, status)].append((le, int(n), float(seconds)))
    result: dict[str, dict[tuple[str, str], Histogram]] = {name: {} for name in DURATIONS}
    keys = sorted({(type_, status) for _, type_, status in found})
    for name in DURATIONS:
        for key in keys:
            counted = found.get((name, *key), [])
            result[name][key] = Histogram(
                buckets=[sum(n for le, n, _ in counted if le <= bound) for bound in BUCKETS],
                count=sum(n for _, n, _ in counted),
                total=sum(seconds for _, _, seconds in counted),
            )
    return result


def _webhook_counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
    )
    return dict(rows.tuples().all())


def _broker_queue_length() -> int | None:
    """Messages waiting in Redis for a worker; None when Redis does not answer."""
    try:
        return int(get_redis().llen(get_settings().celery_queue))
    except redis.RedisError as exc:
        log.warning("broker queue length unavailable: %s", type(exc).__name__)
        return None


def fold_finished_jobs(session: Session | None = None) -> int:
    """Count the jobs finished since the last fold into the totals; how many it counted.

    Without `session`, committed on its own, before a scrape reads the totals: its
    row locks on the totals go with its commit, not with the scrape's reads. With
    one, in its transaction: a deletion counts the jobs whose rows it is about to
    delete, and the totals stay counters."""
    if session is not None:
        return session.execute(text("SELECT fold_finished_jobs()")).scalar_one()
    with session_scope() as own:
        return fold_finished_jobs(own)


def read_snapshot() -> Snapshot:
    """Query everything a scrape shows. Database errors propagate (the API answers 503)."""
    fold_finished_jobs()
    with session_scope() as session:
        snapshot = Snapshot(
            jobs=_job_counts(session),
            errors=_error_counts(session),
            durations=_duration_histograms(session),
            webhooks=_webhook_counts(session),
            waiting=_waiting_counts(session),
        )
    snapshot.broker_queue_length = _broker_queue_length()
    return snapshot


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _job_families(jobs: dict[tuple[str, str], int]) -> Iterator[Metric]:
    current = _gauge("jobs", "Jobs by type and current status.", ["type", "status"])
    created = _counter("jobs_created", "Jobs ever submitted, by type.", ["type"])
    finished = _counter(
        "jobs_finished", "Jobs that ended, by type and final status.", ["type", "status"]
    )
    per_type: dict[str, int] = defaultdict(int)
    for (type_, status), n in sorted(jobs.items()):
        current.add_metric([type_, status], n)
        per_type[type_] += n
        if status in FINISHED_STATUSES:
            finished.add_metric([type_, status], n)
    for type_, n in sorted(per_type.items()):
        created.add_metric([type_], n)
    yield from (current, created, finished)


def _queue_families(jobs: dict[tuple[str, str], int], broker: int | None) -> Iterator[Metric]:
    depth = _gauge("queue_depth", "Jobs queued in PostgreSQL, retries included.", [])
    depth.add_metric([], sum(n for (_, status), n in jobs.items() if status == js.QUEUED))
    yield depth
    running = _gauge("jobs_running", "Jobs running now (holding a worker slot).", [])
    running.add_metric([], sum(n for (_, status), n in jobs.items() if status == js.RUNNING))
    yield running
    # Absent rather than a guess while Redis is down: alert on absent().
    if broker is not None:
        length = _gauge(
            "broker_queue_length", "Messages in the Celery queue (CELERY_QUEUE) not yet taken.", []
        )
        length.add_metric([], broker)
        yield length


def _error_families(errors: dict[tuple[str, str], int]) -> Iterator[Metric]:
    failed = _counter("jobs_failed", "Failed jobs by error code.", ["code"])
    retrying = _gauge("jobs_retrying", "Queued jobs waiting out a retry, by error code.", ["code"])
    for (status, code), n in sorted(errors.items()):
        (failed if status == js.FAILED else retrying).add_metric([code], n)
    yield from (failed, retrying)


def _duration_families(durations: dict[str, dict[tuple[str, str], Histogram]]) -> Iterator[Metric]:
    for name, doc in DURATIONS.items():
        family = HistogramMetricFamily(
            f"{PREFIX}_job_{name}_seconds", doc, labels=["type", "status"]
        )
        for (type_, status), h in sorted(durations.get(name, {}).items()):
            buckets = [(str(le), n) for le, n in zip(BUCKETS, h.buckets, strict=True)]
            family.add_metric([type_, status], [*buckets, ("+Inf", h.count)], h.total)
        yield family


def _webhook_families(webhooks: dict[str, int]) -> Iterator[Metric]:
    family = _gauge("webhook_deliveries", "Webhook deliveries by status.", ["status"])
    for status, n in sorted(({s: 0 for s in WEBHOOK_STATUSES} | webhooks).items()):
        family.add_metric([status], n)
    yield family


def _waiting_families(waiting: dict[str, int]) -> Iterator[Metric]:
    # A fixed set of reasons as labels (never user ids): bounded cardinality.
    family = _gauge("jobs_waiting", "Queued jobs by why they have not started.", ["reason"])
    for reason in REASONS:
        family.add_metric([reason], waiting.get(reason, 0))
    yield family


class ServiceMetricsCollector:
    """A prometheus_client collector: each collect() is one snapshot of Postgres."""

    def collect(self) -> Iterator[Metric]:
        snapshot = read_snapshot()
        # Every known type and status is reported, zeros included, so series
        # exist before their first event and rate() sees the first increase.
        jobs = {(t, s): 0 for t in JOB_TYPES for s in JOB_STATUSES} | snapshot.jobs
        yield from _job_families(jobs)
        yield from _queue_families(jobs, snapshot.broker_queue_length)
        yield from _waiting_families(snapshot.waiting)
        yield from _error_families(snapshot.errors)
        yield from _duration_families(snapshot.durations)
        yield from _webhook_families(snapshot.webhooks)
