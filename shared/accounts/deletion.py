"""Deleting an account: everything the service holds for a user, in one transaction.

The user's row goes, and PostgreSQL's cascades take the rest with it: API keys,
the stored TabPFN token and webhook secret, jobs with their tables and results,
idempotency keys, webhook deliveries and their attempts, fitted models. Then, as
`DELETE /models/{id}` does for one model, the models' copies in the user's TabPFN
account are deleted, best effort, with no connection held.

Jobs still queued or running end canceled, and are counted so in /metrics; to
a worker, a deleted row is a lost claim (its heartbeat finds no row, its ending
statement matches none), so a running job's outcome is discarded as a canceled
one's is, and a queued job is never claimed. Their waiters are woken, and
answered 401: the key they came with is gone.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import delete, select, update

from shared.accounts.security import decrypt_or_none
from shared.core.db import session_scope
from shared.core.errors import INVALID_API_KEY, Unauthorized
from shared.core.metrics import fold_finished_jobs
from shared.jobs import states as js
from shared.jobs.events import job_changed
from shared.jobs.lifecycle import canceled
from shared.models import FittedModel, Job, User
from shared.upstream.account import delete_upstream_model

log = logging.getLogger(__name__)

# The models' upstream copies are deleted a few at a time, within a budget: an
# account with thousands of models must not hold its request for minutes. What
# is left is reported (`upstream_deleted` false), for the user to delete in their
# TabPFN account, where the copies are theirs.
UPSTREAM_PARALLEL = 4
UPSTREAM_BUDGET_S = 30.0


def delete_account(*, user_id: uuid.UUID) -> bool:
    """Delete the user and everything of theirs; Unauthorized if already deleted.
    Returns whether every model's copy in the TabPFN account is gone too."""
    with session_scope() as session:
        # FOR UPDATE: waits for the transactions that key-share the row (a submit's
        # insert, a claim, a key's revocation) to end; those that come after it find
        # no user and fail on the foreign key, answered 401 (api/errors.py).
        token_encrypted = session.scalar(
            select(User.tabpfn_token_encrypted).where(User.id == user_id).with_for_update()
        )
        if token_encrypted is None:
            raise Unauthorized(INVALID_API_KEY)
        # Read before the rows go: a token this process cannot decrypt (a SECRET_KEY
        # rotation under way) answered 500 after the account was deleted.
        token = decrypt_or_none(token_encrypted)
        # Unfinished jobs end canceled first, and the finished jobs not yet counted in
        # the /metrics totals are counted now (shared.core.metrics): the totals are
        # counters, and the rows they are counted from are about to go.
        active = session.scalars(
            update(Job)
            .where(Job.user_id == user_id, Job.status.in_([js.QUEUED, js.RUNNING]))
            .values(**canceled("The account was deleted."))
            .returning(Job.id)
        ).all()
        fold_finished_jobs(session)
        upstream_ids = session.scalars(
            select(FittedModel.upstream_model_id).where(FittedModel.user_id == user_id)
        ).all()
        session.execute(delete(User).where(User.id == user_id))
        for job_id in active:
            # Published after the commit, with no fields: a waiter reads the job
            # again and finds its key gone.
            job_changed(session, job_id, js.CANCELED)
    if token is None:
        log.warning(
            "account %s: its token cannot be decrypted here (is SECRET_KEY missing a key?); "
            "its models' copies stay in its TabPFN account",
            user_id,
        )
        upstream_deleted = not upstream_ids
    else:
        upstream_deleted = _delete_upstream_models(token, upstream_ids)
    log.info(
        "account %s deleted (%d unfinished jobs stopped, %d models); upstream copies deleted: %s",
        user_id, len(active), len(upstream_ids), upstream_deleted,
    )  # fmt: skip
    return upstream_deleted


def _delete_upstream_models(token: str, upstream_ids: list[str]) -> bool:
    """Delete each model's copy in the TabPFN account; True if every one is gone."""
    if not upstream_ids:
        return True
    deadline = time.monotonic() + UPSTREAM_BUDGET_S

    def delete_one(upstream_id: str) -> bool:
        if time.monotonic() >= deadline:
            return False  # out of budget: left in the user's TabPFN account
        return delete_upstream_model(token, upstream_id)

    with ThreadPoolExecutor(UPSTREAM_PARALLEL, thread_name_prefix="account-delete") as pool:
        return all(list(pool.map(delete_one, upstream_ids)))
