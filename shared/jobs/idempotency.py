"""Idempotency-Key: a retried submit returns the first job instead of making another.

The key is scoped to the user. The same key with the same request returns the
job it made first; the same key with a different request is a conflict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.core.errors import IdempotencyConflict
from shared.models import IdempotencyKey, Job, User


def fingerprint(route: str, request: dict[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()


def _replay(session: Session, user: User, key: str, request_hash: str) -> Job | None:
    row = session.get(IdempotencyKey, (user.id, key))
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used with a different request; "
            "use a new key for a new job."
        )
    return session.get(Job, row.job_id)


def create_once(
    *,
    session: Session,
    user: User,
    key: str | None,
    request_hash: Callable[[], str],
    create: Callable[[], Job],
) -> tuple[Job, bool]:
    """The job for this request, made now or earlier; True when it was made now.

    `request_hash` is called only when a key was sent: hashing a large body is
    not free. When two requests with one key race, the unique key makes one of
    them roll back everything it wrote and return the winner's job.
    """
    if key is None:
        return create(), True
    digest = request_hash()
    first = _replay(session, user, key, digest)
    if first is not None:
        return first, False
    savepoint = session.begin_nested()
    try:
        job = create()
        session.add(IdempotencyKey(user_id=user.id, key=key, request_hash=digest, job_id=job.id))
        session.flush()
    except IntegrityError:
        savepoint.rollback()
        first = _replay(session, user, key, digest)
        if first is None:
            raise
        return first, False
    savepoint.commit()
    return job, True
