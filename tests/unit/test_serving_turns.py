"""A slot serving a backlog goes back to Celery after its turn, waking another slot.

It served until nothing was claimable: on a node whose every slot had a backlog, the
sweeper's task (which frees a dead node's runs), webhook deliveries and retention
waited behind it in the queue, for hours.
"""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

from worker import runner


def test_a_slot_serving_a_backlog_gives_its_turn_back(monkeypatch) -> None:
    looks: list[int] = []

    def claim_next(**_):
        looks.append(1)
        assert len(looks) < 200, "the slot never gave its turn back"
        return SimpleNamespace(claim=SimpleNamespace(job_id=uuid.uuid4()), paused=[], more=True)

    def run_claimed(claim, *, prefetched=None):
        time.sleep(0.01)
        return runner.RunOutcome()

    woken: list[uuid.UUID] = []
    fanned: list[int] = []
    monkeypatch.setattr(runner, "claim_next", claim_next)
    monkeypatch.setattr(runner, "run_claimed", run_claimed)
    monkeypatch.setattr(runner, "enqueue_job", lambda job_id, **_: woken.append(job_id))
    monkeypatch.setattr(runner, "wake_now", lambda: fanned.append(1))
    monkeypatch.setattr(runner, "SERVE_TURN_S", 0.1)
    started = time.monotonic()
    ran = runner._serve(fan_out=False, prefetched=None, job_id=None)
    assert 3 <= ran < 50 and time.monotonic() - started < 2
    # The backlog goes on in another slot's turn, woken by a message naming a job: one
    # that does not fan out (a pure wake-up would send a message per claim it makes).
    assert len(woken) == 1 and fanned == []
