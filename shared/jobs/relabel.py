"""Changing a job's metadata after its submit (`PATCH /jobs/{id}`).

A pipeline labels a job as its own records move on (an order shipped, a run
promoted), at any point of the job's life. The change is a JSON Merge Patch of
the labels (shared.jobs.job_metadata.merged), made under the row's lock so two
changes at once both count. A job's webhook event keeps the labels it had when
the job ended: an event describes that moment and is sent, and resent, as it was.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from shared.core.errors import NotFound
from shared.jobs.job_metadata import merged
from shared.models import Job, User


def relabel_job(*, session: Session, user: User, job_id: uuid.UUID, patch: Any) -> Job:
    """The caller's job with its labels patched by `patch`; NotFound for none.

    Checked before anything is written: a result over the limits is a 422 and the
    labels stay as they were."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.user_id != user.id:
        raise NotFound(f"No job {job_id}.")
    job.labels = merged(job.labels, patch)
    session.flush()
    return job
