"""The Celery settings only a worker or beat reads: acks, pool, time limits, the schedule.

Applied by `worker.tasks`, which every worker, beat and Flower process imports,
to the app of `shared.queue` (broker settings and sending, what the API needs).
"""

from __future__ import annotations

from celery import Celery

from shared.core.config import get_settings
from shared.queue import RETENTION, SWEEP, SWEEP_WEBHOOKS


def configure_worker(app: Celery) -> None:
    settings = get_settings()
    app.conf.update(
        # A job is acknowledged only once it ran; a worker that dies mid-job
        # hands it back, and the Postgres claim keeps a re-run from doubling.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Built for waiting: a job is almost all upstream wait, so one process
        # holds WORKER_CONCURRENCY jobs in flight on threads (docs/scheduling.md).
        # `tabpfn-api worker -P prefork -c 4` still works, for whoever wants it.
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        # The threads pool ignores these; the lease keeper (worker.heartbeat) ends a
        # job at RUNNING_TIMEOUT_S whatever the pool. Under prefork they still apply.
        task_soft_time_limit=settings.running_timeout_s,
        task_time_limit=settings.running_timeout_s + 30,
        broker_connection_retry_on_startup=True,
        # Keep running jobs when the broker connection drops: their results land in
        # Postgres either way, and the claim makes a redelivery harmless.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        # Task events feed Flower: its dashboard and its /metrics (worker metrics).
        worker_send_task_events=True,
        beat_schedule={
            "sweep": {"task": SWEEP, "schedule": settings.sweeper_interval_s},
            "retention": {"task": RETENTION, "schedule": settings.retention_interval_s},
            "webhooks": {"task": SWEEP_WEBHOOKS, "schedule": settings.sweeper_interval_s},
        },
    )
