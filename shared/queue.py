"""The Celery app: broker settings and how jobs are enqueued.

Tasks, and the settings only a worker or beat reads (pool, acks, time limits,
the schedule), are added by `worker.tasks`; the API only sends task names, so
it never imports worker code. Redis carries job ids only, never data or tokens.

A `jobs.run` message is a wake-up: the worker slot that takes it runs whatever
the scheduler (shared.jobs.scheduling) says should run next; the job id it carries
names the job that caused it, for operators reading Flower.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from datetime import datetime
from functools import lru_cache

from celery import Celery

from shared.core.config import get_settings
from shared.core.redis_client import get_redis

log = logging.getLogger(__name__)

RUN_JOB = "jobs.run"
SWEEP = "jobs.sweep"
RETENTION = "data.retention"
DELIVER_WEBHOOK = "webhooks.deliver"
SWEEP_WEBHOOKS = "webhooks.sweep"


@lru_cache
def get_celery() -> Celery:
    settings = get_settings()
    app = Celery("tabpfn_api", broker=settings.require("REDIS_URL").redis_url)
    app.conf.update(
        task_ignore_result=True,  # results live in Postgres
        task_default_queue=settings.celery_queue,
        # Longer than any job may run, so Redis does not redeliver a live job.
        broker_transport_options={"visibility_timeout": int(settings.running_timeout_s) + 600},
        # A submit must not hang on a dead broker: give up fast, the sweeper resends.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        broker_connection_timeout=3,
        task_serializer="json",
        accept_content=["json"],
        # Flower sees a task from the moment it is sent, not only once a worker has it.
        task_send_sent_event=True,
    )
    return app


def warm_up_broker() -> None:
    """Celery's configuration, routes and a pooled broker connection, built now.

    A process's first `send_task` finalizes Celery's configuration (importing its
    loader), builds the router and the producer pool and connects: ~260 ms of CPU
    in a fresh process, measured, against about a millisecond for later sends.
    Nothing is sent. Raises when the broker is down.
    """
    app = get_celery()
    app.amqp.router  # noqa: B018  (finalizes the configuration; the first send would)
    app.backend  # noqa: B018  (results are ignored, but a send builds the backend first)
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection(max_retries=1)
        # Declared once per pooled connection, as the first send would (idempotent).
        producer.maybe_declare(app.amqp.queues[app.conf.task_default_queue])


def _send(task: str, ident: uuid.UUID | None, countdown: float | None) -> bool:
    try:
        args = [str(ident)] if ident is not None else []
        get_celery().send_task(task, args=args, countdown=countdown)
    except Exception:  # kombu raises many kinds; all mean "not sent"
        log.warning("%s %s could not be enqueued; the sweeper will retry", task, ident)
        return False
    return True


def enqueue_webhook(delivery_id: uuid.UUID, *, countdown: float | None = None) -> bool:
    """Send a webhook delivery to the workers (its row is committed already)."""
    return _send(DELIVER_WEBHOOK, delivery_id, countdown)


# Wake-ups are de-duplicated per tick this long, fleet-wide. A token's budget
# frees up at fractional moments (shared/upstream/pacing.py: the moment an earlier
# call leaves the window): rounded up to whole seconds, a burst paced to 5-s
# windows started each window's jobs up to a second late, every window.
WAKE_TICK_S = 0.1


def wake_at(when: datetime) -> None:
    """Make sure some worker slot looks at the queue at `when` (once per tick, fleet-wide).

    A job whose token has no budget holds no slot while it waits, so nothing
    would look at it again when the window reopens; this is that look.
    """
    # One wake-up per tick, sent for the END of that tick: every caller whose
    # `when` falls in it is covered. (Sent for the first caller's `when`, a later
    # caller with a later `when` in the same tick was dropped, and its jobs
    # waited for the sweeper.)
    tick = math.ceil(when.timestamp() / WAKE_TICK_S)
    countdown = max(0.0, tick * WAKE_TICK_S - time.time()) + 0.05
    try:
        # Keyed by the queue: deployments sharing one Redis must not swallow each other's.
        key = f"tabpfn-api:wake:{get_settings().celery_queue}:{tick}"
        first = get_redis().set(key, 1, nx=True, ex=int(countdown) + 60)
    except Exception:  # Redis down: the sweeper's next pass wakes the queue instead
        return
    if first:
        _send(RUN_JOB, None, countdown)


def wake_now() -> bool:
    """One more worker slot looks at the queue now (no job id: a pure wake-up)."""
    return _send(RUN_JOB, None, None)


def enqueue_job(job_id: uuid.UUID, *, countdown: float | None = None) -> bool:
    """Send a job id to the workers; False when the broker is unreachable.

    Called after the job's row committed. If this fails the job stays queued
    in Postgres and the sweeper sends it later, so the caller still answers 202.
    """
    return _send(RUN_JOB, job_id, countdown)
