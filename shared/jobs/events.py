"""Tell waiting API processes that a job changed, the moment its change commits.

Every state or stage transition marks the job in the session; after the
transaction commits, the job's id is published on one Redis channel. API
processes wake their long-polls and event streams from it. A lost message
costs only latency: waiters re-read Postgres every few seconds anyway.

The end of a job carries the job's public fields as the transaction that
ended it wrote them (what GET /jobs/{id} shows, the caller's short metadata
included; no data, URLs or secrets), so
a long-poll answers from the message instead of reading the row back.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

import redis
from sqlalchemy.orm import Session

from shared.core.after_commit import after_commit
from shared.core.redis_client import get_redis
from shared.models import Job

log = logging.getLogger(__name__)

CHANNEL = "tabpfn-api:job-changes"


# Labels (`metadata`) longer than this, as JSON, are left out of an end's message,
# and its waiters read the job instead: every API process keeps thousands of recent
# ends (api/job_waiter.py), and 16 values of 512 characters could make one 100 KB.
LABELS_IN_MESSAGE_MAX = 1024

# A finished job's fields as its waiters answer with them; RETURNING these.
FINAL_FIELDS = (
    Job.id,
    Job.user_id,
    Job.type,
    Job.status,
    Job.stage,
    Job.task,
    Job.model_id,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
    Job.attempts,
    Job.error_code,
    Job.error_message,
    Job.upstream_timings,
    Job.labels,
)
# What a waiter needs of an end's message to answer from it alone.
FINAL_KEYS = frozenset(column.key for column in FINAL_FIELDS)


def answers_alone(final: Mapping[str, Any]) -> bool:
    """Whether an end's fields are all there to answer from: not when its labels were
    too long to send (below), nor from a worker of a release that sent fewer fields
    (a rolling upgrade). Otherwise the waiter reads the job."""
    return final.keys() >= FINAL_KEYS


def job_changed(
    session: Session, job_id: uuid.UUID, status: str, *, final: Mapping[str, Any] | None = None
) -> None:
    """Publish "<job_id> <status>[ <final fields as JSON>]" once the session has committed.

    The status lets a waiter that only cares about the end (a long-poll) ignore
    stage changes without reading the database.
    """
    message = f"{job_id} {status}"
    if final is not None:
        fields = {key: _plain(value) for key, value in final.items()}
        labels = fields.get("labels")
        if labels is not None and len(json.dumps(labels)) > LABELS_IN_MESSAGE_MAX:
            del fields["labels"]  # so its waiters read the job (answers_alone)
        message += " " + json.dumps(fields)
    after_commit(session, partial(_publish, message))


def parse_change(message: str) -> tuple[str, str, dict[str, Any] | None]:
    """(job id, status, final fields or None) of a published message."""
    job_id, _, rest = message.partition(" ")
    status, _, final = rest.partition(" ")
    return job_id, status, json.loads(final) if final else None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _publish(message: str) -> None:
    try:
        get_redis().publish(CHANNEL, message)
    except redis.RedisError as exc:
        log.warning("job change not published (%s); waiters will re-check", type(exc).__name__)
