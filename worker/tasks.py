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
    enqueue_job,
    enqueue_webhook,
    get_celery,
)
from worker.retention import purge_expired_data
from worker.runner import run_job
from worker.sweeper import sweep
from worker.webhooks import deliver, sweep_webhooks

log = logging.getLogger(__name__)
app = get_celery()


@app.task(name=RUN_JOB)
def run_job_task(job_id: str) -> None:
    outcome = run_job(uuid.UUID(job_id))
    if outcome.retry_in_s is not None:
        # The job row is queued again with run_after set; this is its wake-up call.
        # Should the message be lost, the sweeper sends another.
        enqueue_job(uuid.UUID(job_id), countdown=outcome.retry_in_s)


@app.task(name=SWEEP)
def sweep_task() -> None:
    sweep()


@app.task(name=RETENTION)
def retention_task() -> None:
    purge_expired_data()


@app.task(name=DELIVER_WEBHOOK)
def deliver_webhook_task(delivery_id: str) -> None:
    delay = deliver(uuid.UUID(delivery_id))
    if delay is not None:
        enqueue_webhook(uuid.UUID(delivery_id), countdown=delay)


@app.task(name=SWEEP_WEBHOOKS)
def sweep_webhooks_task() -> None:
    sweep_webhooks()
