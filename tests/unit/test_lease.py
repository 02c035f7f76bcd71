"""The lease keeper alone: stages do not wait, lost claims surface, deadlines end jobs.

The database is faked at the boundary (`set_stage`, `heartbeat_many`,
`fail_job`, sessions); tests/e2e/test_waiting.py and tests/reliability/ run the
real thing end to end.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import pytest

from shared.core.config import get_settings
from shared.jobs.lifecycle import Claim
from worker import heartbeat as lease_module
from worker.heartbeat import TIME_LIMIT_CODE, ClaimLost, LeaseKeeper


@pytest.fixture
def database(monkeypatch):
    """Fake stage, heartbeat and fail writes; `release` lets a blocked stage write finish."""
    state = {"stages": [], "beats": 0, "kept": True, "failed": []}
    release = threading.Event()
    written = threading.Event()

    def set_stage(*, session, claim, stage):
        release.wait(10)
        state["stages"].append(stage)
        written.set()
        return state["kept"]

    def heartbeat_many(*, session, claims):
        state["beats"] += 1
        return {c.job_id for c in claims} if state["kept"] else set()

    def fail_job(*, session, claim, code, message):
        state["failed"].append((claim, code))
        return True

    monkeypatch.setattr(lease_module, "set_stage", set_stage)
    monkeypatch.setattr(lease_module, "heartbeat_many", heartbeat_many)
    monkeypatch.setattr(lease_module, "fail_job", fail_job)
    monkeypatch.setattr(lease_module, "session_scope", lambda **_: contextlib.nullcontext())
    monkeypatch.setenv("HEARTBEAT_INTERVAL_S", "0.05")
    get_settings.cache_clear()
    yield state, release, written
    get_settings.cache_clear()


def wait_until(predicate, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_a_stage_is_reported_without_waiting_for_its_write(database):
    state, release, written = database
    keeper = LeaseKeeper()
    lease = keeper.hold(Claim(job_id=uuid.uuid4(), attempt=1))
    lease.enter("predicting")  # returns while the write is still blocked
    assert state["stages"] == []
    release.set()
    assert written.wait(5)
    assert state["stages"] == ["predicting"]
    keeper.release(lease)


def test_one_beat_renews_every_lease_and_a_lost_claim_is_raised_at_the_next_stage(database):
    state, release, _ = database
    release.set()
    keeper = LeaseKeeper()
    leases = [keeper.hold(Claim(job_id=uuid.uuid4(), attempt=1)) for _ in range(3)]
    assert wait_until(lambda: state["beats"] >= 2)
    assert not any(lease.lost for lease in leases)
    state["kept"] = False  # canceled, or taken over by the sweeper
    assert wait_until(lambda: all(lease.lost for lease in leases))
    with pytest.raises(ClaimLost):
        leases[0].enter("fitting")


def test_a_job_past_its_deadline_is_failed_by_the_keeper_while_its_thread_hangs(
    database, monkeypatch
):
    state, release, _ = database
    release.set()
    monkeypatch.setenv("RUNNING_TIMEOUT_S", "0.3")
    get_settings.cache_clear()
    keeper = LeaseKeeper()
    claim = Claim(job_id=uuid.uuid4(), attempt=2)
    started = time.monotonic()
    lease = keeper.hold(claim)  # nobody calls enter(): the job's thread is stuck upstream
    assert wait_until(lambda: state["failed"])
    assert time.monotonic() - started < 2
    assert state["failed"] == [(claim, TIME_LIMIT_CODE)]
    assert lease.lost and lease.timed_out
    with pytest.raises(ClaimLost):
        lease.enter("predicting")
