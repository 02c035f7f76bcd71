"""The worker's lease thread on its own: stage reports do not wait, a lost claim surfaces.

The database is faked at the boundary (`set_stage`, `heartbeat`, sessions);
tests/test_waiting.py and tests/reliability/ run the real thing end to end.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import pytest

from shared.job_lifecycle import Claim
from worker import heartbeat as lease_module
from worker.heartbeat import ClaimLost, holding


@pytest.fixture
def database(monkeypatch):
    """Fake stage and heartbeat writes; `release` lets a blocked write finish."""
    state = {"stages": [], "beats": 0, "kept": True}
    release = threading.Event()
    written = threading.Event()

    def set_stage(*, session, claim, stage):
        release.wait(10)
        state["stages"].append(stage)
        written.set()
        return state["kept"]

    def beat(*, session, claim):
        state["beats"] += 1
        return state["kept"]

    monkeypatch.setattr(lease_module, "set_stage", set_stage)
    monkeypatch.setattr(lease_module, "heartbeat", beat)
    monkeypatch.setattr(lease_module, "session_scope", contextlib.nullcontext)
    return state, release, written


def test_a_stage_is_reported_without_waiting_for_its_write(database):
    state, release, written = database
    with holding(Claim(job_id=uuid.uuid4(), attempt=1)) as lease:
        lease.enter("predicting")  # returns while the write is still blocked
        assert state["stages"] == []
        release.set()
        assert written.wait(5)
    assert state["stages"] == ["predicting"]


def test_a_lost_claim_is_raised_at_the_next_stage(database):
    state, release, written = database
    state["kept"] = False  # canceled, or taken over by the sweeper
    release.set()
    with holding(Claim(job_id=uuid.uuid4(), attempt=1)) as lease:
        lease.enter("predicting")
        assert written.wait(5)
        deadline = time.monotonic() + 5
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ClaimLost):
            lease.enter("fitting")
