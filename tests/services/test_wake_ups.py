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
import time_machine

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


def test_one_wake_up_per_tick_covers_every_wait_that_ends_in_it(sent):
    now = time.time()
    # A tick far enough ahead that no other test shares its Redis key.
    tick = math.floor(now / queue.WAKE_TICK_S) + 6000 + random.randrange(100_000)
    start = tick * queue.WAKE_TICK_S
    early, late = start + 0.01, start + 0.09
    # The clock stands still: the countdown is checked against the same "now" it was
    # computed from. (Read afterwards from a running clock, the check also counted the
    # Redis round trips in between, and failed on a loaded CI.)
    with time_machine.travel(now, tick=False):
        queue.wake_at(datetime.fromtimestamp(early, UTC))
        queue.wake_at(datetime.fromtimestamp(late, UTC))
    assert len(sent) == 1, "de-duplicated per tick, fleet-wide"
    (task, _, countdown) = sent[0]
    assert task == queue.RUN_JOB
    # The one message must not fire before the later wait ends, or its jobs are
    # left for the sweeper; nor long after it (a token's budget frees up at
    # fractional moments, and every wait rounded up delays its jobs).
    assert late <= now + countdown <= late + queue.WAKE_TICK_S + 0.1
    # A wait in the next tick gets a wake-up of its own.
    queue.wake_at(datetime.fromtimestamp(start + 0.15, UTC))
    assert len(sent) == 2


def test_a_claim_says_whether_runnable_work_remains(sent):
    from shared.jobs.scheduling import claim_next

    a = make_user()
    make_jobs(a, 2)
    first = claim_next()
    assert first.claim is not None and first.more, "A's second job is runnable (cap 3)"
    second = claim_next()
    assert second.claim is not None and not second.more, "nothing left after A's last job"
    b, c = make_user(), make_user()
    make_jobs(b, 1)
    make_jobs(c, 1)
    assert claim_next().more, "another user's job is still runnable"
    assert not claim_next().more
    assert claim_next().claim is None


@pytest.mark.parametrize("fan_out, wake_ups", [(True, 2), (False, 0)])
def test_a_backlog_wake_up_fans_out_and_a_submit_wake_up_does_not(
    sent, monkeypatch, fan_out, wake_ups
):
    from worker import runner

    ran = []
    # The run itself is not under test: only the wake-ups the claims send.
    monkeypatch.setattr(
        runner,
        "run_claimed",
        lambda claim, prefetched=None: ran.append(claim) or runner.RunOutcome(),
    )
    make_jobs(make_user(), 3)
    assert runner.serve(fan_out=fan_out) == 3
    assert len({claim.job_id for claim in ran}) == 3, "each job claimed once"
    # While work remained after a claim (after the first and the second), one more slot woke.
    assert [task for task, ident, _ in sent] == [queue.RUN_JOB] * wake_ups
    assert all(ident is None and countdown is None for _, ident, countdown in sent)


def _recording_runs(monkeypatch) -> tuple[list, list]:
    """Replace the job's read and its run: which jobs were read, and what each run was given."""
    from worker import runner

    reads: list = []
    runs: list = []

    def read(job_id):
        reads.append(job_id)
        return f"rows of {job_id}"

    def run(claim, prefetched=None):
        runs.append((claim.job_id, prefetched.result() if prefetched else None))
        return runner.RunOutcome()

    monkeypatch.setattr(runner, "_load", read)
    monkeypatch.setattr(runner, "run_claimed", run)
    return reads, runs


def test_an_idle_slot_reads_the_job_its_wake_up_names_while_it_claims(sent, monkeypatch):
    from worker import runner

    reads, runs = _recording_runs(monkeypatch)
    (job,) = make_jobs(make_user(), 1)
    assert runner.serve(fan_out=False, job_id=job) == 1
    assert runs == [(job, f"rows of {job}")], "the run was handed the rows read during the claim"
    assert reads == [job]


def test_a_prefetch_for_a_job_the_slot_did_not_claim_is_not_used(sent, monkeypatch):
    from worker import runner

    reads, runs = _recording_runs(monkeypatch)
    # FIFO: the slot woken by the second job's submit claims the first job first.
    first, second = make_jobs(make_user(), 2)
    assert runner.serve(fan_out=False, job_id=second) == 2
    assert runs == [(first, None), (second, None)], "each run reads its own job"
    assert reads == [second], "only the guess was read ahead (and dropped)"


def test_a_slot_does_not_read_ahead_while_another_slot_of_its_process_serves(sent, monkeypatch):
    from worker import runner

    reads, runs = _recording_runs(monkeypatch)
    (job,) = make_jobs(make_user(), 1)
    with runner._serving_slot() as alone:  # another slot, claiming or running a job
        assert alone
        assert runner.serve(fan_out=False, job_id=job) == 1
    assert runs == [(job, None)]
    assert reads == []
