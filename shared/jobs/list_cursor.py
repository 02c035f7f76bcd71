"""The cursor of GET /jobs's and GET /models's pages: where the last page ended.

A cursor is "<id>_<created_at in microseconds since the epoch>" of the page's last
row: the lists' order (newest first, ids breaking ties) needs both, and carrying
them in the cursor means the next page does not look that row up. So a page
follows even when its last job or model was deleted meanwhile (`DELETE
/jobs/{id}`, `DELETE /models/{id}`), as in the loop "list, delete each, next
page" that a cleanup script runs. A bare id is still taken as `before` (the last
id of a page, as documented first); that form needs the row to exist.

GET /jobs gives the cursor as `next_cursor`; GET /models in its `Link` header.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.core.errors import ValidationFailed

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class ListAnchor:
    """The last row of a page, as the list orders it."""

    created_at: datetime
    id: uuid.UUID


def encode(created_at: datetime, job_id: uuid.UUID) -> str:
    return f"{job_id}_{(created_at - _EPOCH) // _MICROSECOND}"


def decode(text: str | None) -> ListAnchor | uuid.UUID | None:
    """A cursor's anchor, or a bare id to look up; None for none; a 422 for anything else."""
    if text is None:
        return None
    job_id, underscore, micros = text.partition("_")
    try:
        parsed = uuid.UUID(job_id)
        if not underscore:
            return parsed
        return ListAnchor(created_at=_EPOCH + int(micros) * _MICROSECOND, id=parsed)
    except (ValueError, OverflowError) as exc:
        raise ValidationFailed(
            f"before {text[:80]!r} is not a cursor: pass the one a page gave (GET /jobs's "
            "next_cursor, GET /models's Link header), or the id of the page's last item."
        ) from exc
