"""Changing the labels (the API's `metadata`) of a job or a model after it was made:
`PATCH /jobs/{id}` and `PATCH /models/{id}`.

A pipeline labels a job as its own records move on (an order shipped, a run
promoted), at any point of the job's life, and names its models ("churn",
"stage: live") to find them again. The change is a JSON Merge Patch of the
labels (shared.jobs.job_metadata.merged), made under the row's lock so two
changes at once both count. A job's webhook event keeps the labels it had when
the job ended: an event describes that moment and is sent, and resent, as it was.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from shared.core.errors import ModelNotFound, NotFound
from shared.jobs.job_metadata import merged
from shared.models import FittedModel, Job, User

Labelled = TypeVar("Labelled", Job, FittedModel)


def relabel_job(*, session: Session, user: User, job_id: uuid.UUID, patch: Any) -> Job:
    """The caller's job with its labels patched by `patch`; NotFound for none."""
    job = _relabel(session, Job, job_id, user, patch)
    if job is None:
        raise NotFound(f"No job {job_id}.")
    return job


def relabel_model(*, session: Session, user: User, model_id: uuid.UUID, patch: Any) -> FittedModel:
    """The caller's model with its labels patched by `patch`; ModelNotFound for none."""
    model = _relabel(session, FittedModel, model_id, user, patch)
    if model is None:
        raise ModelNotFound(f"No model {model_id}.")
    return model


def _relabel(
    session: Session, kind: type[Labelled], row_id: uuid.UUID, user: User, patch: Any
) -> Labelled | None:
    """Checked before anything is written: labels that would break the rules are a
    422 and stay as they were. Another user's row is as absent as a missing one."""
    # FOR NO KEY UPDATE: the labels are no key, so inserts that refer to the row (a
    # predict naming the model, a webhook delivery of the job) need not wait for it.
    row = session.get(kind, row_id, with_for_update={"key_share": True})
    if row is None or row.user_id != user.id:
        return None
    row.labels = merged(row.labels, patch)
    session.flush()
    return row
