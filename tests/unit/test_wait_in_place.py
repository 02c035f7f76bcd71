"""A fit-predict's wait for a full upstream window, in place (`_sleep_until` in
worker/runner.py): it ends when the window reopens, when the node drains (the job
is then handed back) or when the claim is lost (canceled, taken over)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
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


# A fit-predict's prediction, checked against its token's log when it is made
# (`_await_predict_budget`): the log's answers are faked, the waiting is real.


def _lease(
    reservation: str | None = "r1", remaining_s: float = 600.0, fitted_s: float = 10.0
) -> SimpleNamespace:
    return SimpleNamespace(
        lost=False,
        claim=SimpleNamespace(reservation=reservation),
        remaining_s=lambda: remaining_s,
        held_at=time.monotonic() - fitted_s,
    )


# The upstream is only asked to reserve a retried prediction afresh when its claim
# named no reservation.
_UPSTREAM = SimpleNamespace(pace=lambda calls: pytest.fail("reserved afresh"))


def _answers(monkeypatch, *answers) -> list:
    calls: list = []
    queue = list(answers)

    def restamp(fingerprint, entries):
        calls.append((fingerprint, entries))
        return queue.pop(0)

    monkeypatch.setattr(runner.pacing, "restamp", restamp)
    return calls


def test_the_prediction_waits_in_place_until_the_window_has_room(monkeypatch):
    calls = _answers(monkeypatch, _in(0.3), None)
    started = time.monotonic()
    runner._await_predict_budget(_lease(), _UPSTREAM, SimpleNamespace(fingerprint="fp"))
    assert time.monotonic() - started >= 0.25
    assert calls == [("fp", runner.pacing.calls_after_fit("r1"))] * 2


def test_a_long_wait_hands_the_job_back_to_the_queue(monkeypatch):
    _answers(monkeypatch, _in(runner.WAIT_IN_PLACE_MAX_S + 30))
    with pytest.raises(runner._NoBudgetYet):
        runner._await_predict_budget(_lease(), _UPSTREAM, SimpleNamespace(fingerprint="fp"))
    # ...as does a wait past half the job's remaining time.
    _answers(monkeypatch, _in(20))
    with pytest.raises(runner._NoBudgetYet):
        runner._await_predict_budget(
            _lease(remaining_s=30), _UPSTREAM, SimpleNamespace(fingerprint="fp")
        )


def test_a_claim_without_a_reservation_is_not_checked(monkeypatch):
    calls = _answers(monkeypatch)
    runner._await_predict_budget(
        _lease(reservation=None), _UPSTREAM, SimpleNamespace(fingerprint="fp")
    )
    assert calls == []


def test_a_prediction_right_after_its_claim_keeps_the_claims_stamp(monkeypatch):
    calls = _answers(monkeypatch)
    runner._await_predict_budget(
        _lease(fitted_s=0.05), _UPSTREAM, SimpleNamespace(fingerprint="fp")
    )
    assert calls == []  # within the log's margin of the claim: nothing to move


def test_redis_down_does_not_fail_a_job_half_done(monkeypatch):
    import redis

    def restamp(fingerprint, entries):
        raise redis.ConnectionError("Redis is down")

    monkeypatch.setattr(runner.pacing, "restamp", restamp)
    # The prediction goes ahead on the claim's stamps (a 429 would still be a wait).
    runner._await_predict_budget(_lease(), _UPSTREAM, SimpleNamespace(fingerprint="fp"))


def test_a_prediction_sent_again_after_a_429_moves_its_entries_to_the_new_call(monkeypatch):
    calls = _answers(monkeypatch, None)
    runner._await_predict_budget(
        _lease(fitted_s=0.05), _UPSTREAM, SimpleNamespace(fingerprint="fp"), retry=True
    )
    assert calls == [("fp", runner.pacing.calls_after_fit("r1"))]  # however quick the fit


def test_a_retry_without_a_reservation_reserves_the_call_afresh(monkeypatch):
    calls = _answers(monkeypatch)
    paced: list = []
    upstream = SimpleNamespace(pace=paced.append)
    runner._await_predict_budget(
        _lease(reservation=None), upstream, SimpleNamespace(fingerprint="fp"), retry=True
    )
    assert (calls, paced) == ([], [runner.pacing.calls_for("predict")])


# What a hand-back does to the token: after a 429 the upstream closed it for every
# kind of call; when the token's own log had no room for a prediction, the log
# already holds its other calls back, and a fit-only job may still have room.


def _hand_back(monkeypatch, exc: Exception) -> list:
    done: list = []

    @contextmanager
    def session_scope():
        yield "session"

    monkeypatch.setattr(runner, "session_scope", session_scope)
    monkeypatch.setattr(runner, "wait_for_window", lambda **kw: done.append("queued") or True)
    monkeypatch.setattr(runner, "pause_user", lambda **kw: done.append("paused"))
    monkeypatch.setattr(runner, "wake_at", lambda until: done.append("wake-up"))
    monkeypatch.setattr(runner.pacing, "exhaust", lambda fp, until: done.append("closed"))
    monkeypatch.setattr(runner, "classify_fault", lambda exc: getattr(exc, "fault", None))
    loaded = SimpleNamespace(job=SimpleNamespace(user_id="u"), fingerprint="fp")
    claim = SimpleNamespace(job_id="j", attempt=1)
    runner._handle_failure(claim, exc, loaded)
    return done


def test_no_room_for_a_prediction_hands_back_without_closing_the_token(monkeypatch):
    done = _hand_back(monkeypatch, runner._NoBudgetYet(_in(120)))
    assert done == ["queued", "paused", "wake-up"]


def test_a_429_hands_back_and_closes_the_token(monkeypatch):
    met = Exception("429")
    met.fault = SimpleNamespace(wait_until=_in(120))
    assert _hand_back(monkeypatch, met) == ["queued", "paused", "closed", "wake-up"]
