"""Wake-ups on real PostgreSQL and Redis: none is lost, and a backlog fans out over slots.

Sends to the broker are recorded instead of published (the wake-up's countdown
is what is checked); everything else — the Redis de-duplication, the scheduler's
queries — is real.
"""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime

import pytest

from shared import queue
from tests.services.test_scheduling import LIMITS, make_jobs, make_user
from tests.support.inprocess import configured


@pytest.fixture
def sent(services, monkeypatch):
    with configured(services, **LIMITS):
        messages: list[tuple[str, object, float | None]] = []

        def record(task: str, ident: object, countdown: float | None) -> bool:
            messages.append((task, ident, countdown))
            return True

        monkeypatch.setattr(queue, "_send", record)
        yield messages


def test_one_wake_up_per_second_covers_every_wait_that_ends_in_it(sent):
    # A whole second far enough ahead that no other test shares its Redis key.
    second = math.floor(time.time()) + 600 + random.randrange(10_000)
    early, late = second + 0.05, second + 0.9
    queue.wake_at(datetime.fromtimestamp(early, UTC))
    queue.wake_at(datetime.fromtimestamp(late, UTC))
    assert len(sent) == 1, "de-duplicated per second, fleet-wide"
    (task, _, countdown) = sent[0]
    assert task == queue.RUN_JOB
    # The one message must not fire before the later wait ends, or its jobs are
    # left for the sweeper.
    assert time.time() + countdown >= late


def test_a_claim_wakes_one_more_slot_while_runnable_work_remains(sent):
    from worker.runner import _fan_out

    _fan_out()
    assert sent == [], "nothing queued: no wake-up"
    make_jobs(make_user(), 2)
    _fan_out()
    assert [task for task, _, _ in sent] == [queue.RUN_JOB]
    assert sent[0][2] is None, "now, not later"
