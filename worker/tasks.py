"""Celery tasks: ids in, service calls out, retry decisions here."""

from __future__ import annotations

import logging
import uuid

from shared.queue import (
    DELIVER_WEBHOOK,
    RETENTION,
    RUN_JOB,
    SWEEP,
    SWEEP_WEBHOOKS,
    enqueue_webhook,
    get_celery,
)
from worker import lifecycle  # start-up warm-up and the drain
from worker.celery_config import configure_worker
from worker.retention import purge_expired_data
from worker.runner import serve
from worker.sweeper import sweep
from worker.webhooks import deliver_when_free, sweep_webhooks

log = logging.getLogger(__name__)
app = get_celery()
configure_worker(app)
app.steps["worker"].add(lifecycle.DrainOnEveryStop)


@app.task(name=RUN_JOB)
def run_job_task(job_id: str | None = None) -> None:
    """A wake-up (the id names the job that caused it): run what the scheduler picks.

    Without an id it stands for a backlog (worker.runner.serve fans it out)."""
    serve(fan_out=job_id is None, job_id=uuid.UUID(job_id) if job_id else None)


@app.task(name=SWEEP)
def sweep_task() -> None:
    sweep()


@app.task(name=RETENTION)
def retention_task() -> None:
    purge_expired_data()


@app.task(name=DELIVER_WEBHOOK)
def deliver_webhook_task(delivery_id: str) -> None:
    delay = deliver_when_free(uuid.UUID(delivery_id))
    if delay is not None:
        enqueue_webhook(uuid.UUID(delivery_id), countdown=delay)


@app.task(name=SWEEP_WEBHOOKS)
def sweep_webhooks_task() -> None:
    sweep_webhooks()
