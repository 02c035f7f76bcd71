"""Run side effects only once the session's transaction has committed.

Messages to Redis (job ids for workers, job changes for waiters) must never
describe a state that was rolled back, so they are deferred to `after_commit`
and dropped on rollback.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

_DEFERRED = "after_commit_actions"


def after_commit(session: Session, action: Callable[[], object]) -> None:
    session.info.setdefault(_DEFERRED, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_deferred(session: Session) -> None:
    for action in session.info.pop(_DEFERRED, []):
        action()


@event.listens_for(Session, "after_rollback")
def _drop_deferred(session: Session) -> None:
    session.info.pop(_DEFERRED, None)
