"""A fit-predict's wait for a full upstream window, in place (`_sleep_until` in
worker/runner.py): it ends when the window reopens, when the node drains (the job
is then handed back) or when the claim is lost (canceled, taken over)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from worker import runner
from worker.heartbeat import ClaimLost


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def not_draining():
    runner.draining.clear()
    yield
    runner.draining.clear()


def test_the_wait_ends_when_the_window_reopens():
    started = time.monotonic()
    assert runner._sleep_until(SimpleNamespace(lost=False), _in(0.3)) is True
    assert time.monotonic() - started >= 0.25


def test_a_window_already_open_is_not_waited_for():
    started = time.monotonic()
    assert runner._sleep_until(SimpleNamespace(lost=False), _in(-1.0)) is True
    assert time.monotonic() - started < 0.2


def test_a_drain_ends_the_wait_so_the_job_is_handed_back():
    threading.Timer(0.2, runner.draining.set).start()
    started = time.monotonic()
    assert runner._sleep_until(SimpleNamespace(lost=False), _in(30.0)) is False
    assert time.monotonic() - started < 5.0


def test_a_lost_claim_ends_the_wait():
    lease = SimpleNamespace(lost=False)
    threading.Timer(0.2, lambda: setattr(lease, "lost", True)).start()
    started = time.monotonic()
    with pytest.raises(ClaimLost):
        runner._sleep_until(lease, _in(30.0))
    assert time.monotonic() - started < 5.0
