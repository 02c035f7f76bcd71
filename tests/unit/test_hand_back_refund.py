"""A drain's hand-back gives back the budget its runs reserved for calls they never
sent, once: their threads, still in a call when the process exits, never did, and the
rerun reserved the same calls again (docs/scheduling.md promises the refund)."""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from types import SimpleNamespace

from shared.jobs.lifecycle import Claim
from worker import runner
from worker.heartbeat import Lease


def test_a_handed_back_run_refunds_its_unsent_calls_once(monkeypatch) -> None:
    handed = Lease(Claim(uuid.uuid4(), 1, reservation="r-1"), time.monotonic() + 60, None)
    handed.loaded = SimpleNamespace(
        fingerprint="fp", job=SimpleNamespace(type="fit_predict"), steps_begun={"fit"}
    )
    ended = Lease(Claim(uuid.uuid4(), 1, reservation="r-2"), time.monotonic() + 60, None)
    refunds: list[tuple] = []
    sent: list[uuid.UUID] = []

    @contextmanager
    def session_scope(**_):
        yield None

    monkeypatch.setattr(runner, "keeper", lambda: SimpleNamespace(held=lambda: [handed, ended]))
    monkeypatch.setattr(runner, "session_scope", session_scope)
    monkeypatch.setattr(runner, "hand_back_runs_of", lambda **_: [handed.claim.job_id])
    monkeypatch.setattr(runner, "enqueue_job", sent.append)
    monkeypatch.setattr(
        runner.pacing,
        "refund_unsent",
        lambda fp, kind, *, reservation, sent: refunds.append((fp, kind, reservation, sent)),
    )
    assert runner.hand_back_in_flight() == 1
    assert refunds == [("fp", "fit_predict", "r-1", {"fit"})]  # the fit was begun: kept
    assert sent == [handed.claim.job_id] and handed.lost and ended.lost
    # Its thread returns before the exit and meets the lost claim: no second refund.
    runner._refund_unsent(handed.claim, handed)
    assert len(refunds) == 1
