"""The job waiter remembers recent ends, so a watch that starts late misses none."""

from __future__ import annotations

import asyncio

import pytest

from api import job_waiter
from api.job_waiter import JobWaiter


def _watch_now(waiter: JobWaiter, job_id: str):
    async def look():
        async with waiter.watching(job_id, only_when_finished=True) as watch:
            return watch.changed.is_set(), watch.final

    return asyncio.run(look())


def test_an_end_announced_before_the_watch_started_is_seen():
    waiter = JobWaiter()
    waiter._wake("job-1", "succeeded", {"id": "job-1", "status": "succeeded"})
    assert _watch_now(waiter, "job-1") == (True, {"id": "job-1", "status": "succeeded"})


def test_stage_changes_and_other_jobs_are_not_remembered_as_ends():
    waiter = JobWaiter()
    waiter._wake("job-1", "running", None)
    waiter._wake("job-2", "failed", {"id": "job-2"})
    assert _watch_now(waiter, "job-1") == (False, None)


def test_ends_are_forgotten_after_a_while_and_beyond_the_bound(monkeypatch: pytest.MonkeyPatch):
    clock = [1000.0]
    monkeypatch.setattr(job_waiter.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(job_waiter, "RECENT_ENDS", 3)
    waiter = JobWaiter()
    for n in range(5):
        waiter._wake(f"job-{n}", "canceled", {"id": f"job-{n}"})
    assert len(waiter._recent_ends) == 3
    assert _watch_now(waiter, "job-0") == (False, None)  # pushed out by newer ends
    assert _watch_now(waiter, "job-4")[0] is True
    clock[0] += job_waiter.RECENT_END_S + 1
    assert _watch_now(waiter, "job-4") == (False, None)  # forgotten after RECENT_END_S
