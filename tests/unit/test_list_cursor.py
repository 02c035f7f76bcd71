"""GET /jobs's cursor (shared.jobs.list_cursor): exact to the microsecond, a bare id
still taken, anything else a 422."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.core.errors import ValidationFailed
from shared.jobs.list_cursor import ListAnchor, decode, encode

JOB = uuid.UUID("2f1d6a3e-8c4b-4f7e-9a51-0c2d3e4f5a6b")


@pytest.mark.parametrize(
    "created_at",
    [
        datetime(2026, 12, 6, 12, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 12, 6, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(1970, 1, 1, tzinfo=UTC) - timedelta(microseconds=1),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_a_cursor_gives_back_its_anchor_exactly(created_at: datetime) -> None:
    cursor = encode(created_at, JOB)
    assert decode(cursor) == ListAnchor(created_at=created_at, id=JOB)
    assert cursor.startswith(f"{JOB}_")


def test_a_bare_job_id_is_still_a_cursor() -> None:
    assert decode(str(JOB)) == JOB


@pytest.mark.parametrize(
    "text", ["", "x", f"{JOB}_", f"{JOB}_soon", f"{JOB}_1.5", "not-a-uuid_5", f"{JOB}_{10**30}"]
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValidationFailed):
        decode(text)
