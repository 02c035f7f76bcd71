"""Keep every in-flight job's lease alive, report stages, and end jobs at their deadline.

One keeper thread per worker process serves all the jobs the process holds
(64 by default), so leases cost one UPDATE per beat for the whole process and
never a database connection per waiting job.

- Heartbeat: the sweeper treats a running job whose heartbeat is older than
  LEASE_TIMEOUT_S as abandoned (its worker was killed or lost the database).
- Stages: the job's thread moves on to its next upstream call at once; the
  keeper writes the stage in the background.
- Deadline: a job still running RUNNING_TIMEOUT_S after its claim is failed
  with `time_limit_exceeded` by the keeper, even while its thread is stuck in
  an upstream call that ignores everything (Celery's time limits do not apply
  to the threads pool). That thread's later writes are refused: its claim is gone.

A lost claim (canceled, taken over by the sweeper, timed out) is noticed at
the next beat and raised at the job's next stage change; the transaction
that stores the outcome checks the claim again in any case.

(And tell whether a lease's holder is a process of this host that has died.)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.core.config import get_settings
from shared.core.db import session_scope
from shared.core.errors import TimeLimitExceeded
from shared.jobs.lifecycle import (
    Claim,
    fail_job,
    heartbeat_many,
    parse_holder,
    pid_namespace,
    process_start,
    set_stage,
)

log = logging.getLogger(__name__)

TIME_LIMIT_CODE = TimeLimitExceeded.code


class ClaimLost(Exception):
    """The job was canceled, handed to another run, or timed out while this one worked."""


class Lease:
    def __init__(self, claim: Claim, deadline: float, keeper: LeaseKeeper) -> None:
        self.claim = claim
        self.deadline = deadline  # time.monotonic() past which the job is failed
        self.held_at = time.monotonic()  # just after the claim
        self.lost = False
        self.timed_out = False
        # The run's rows once read (worker.runner), and whether its unsent calls were
        # given back: by its own thread, or by a drain's hand-back, whichever comes first.
        self.loaded: Any = None
        self.refunded = False
        self.refund_lock = threading.Lock()
        self._keeper = keeper
        self._stage: str | None = None  # a stage to report, not yet written

    def enter(self, stage: str) -> None:
        """Report that the job entered `stage`; written in the background."""
        if self.lost:
            raise ClaimLost
        self._keeper.report(self, stage)

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise ClaimLost if this run is no longer wanted (canceled, timed out, taken over)."""
        if self.lost:
            raise ClaimLost


class LeaseKeeper:
    """The process's one lease thread; started with the first lease it holds."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._leases: dict[Claim, Lease] = {}
        self._stages: dict[Claim, str] = {}
        self._thread: threading.Thread | None = None

    def hold(self, claim: Claim) -> Lease:
        lease = Lease(claim, time.monotonic() + get_settings().running_timeout_s, self)
        with self._changed:
            self._leases[claim] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()
        return lease

    def release(self, lease: Lease) -> None:
        with self._changed:
            self._leases.pop(lease.claim, None)
            self._stages.pop(lease.claim, None)

    def report(self, lease: Lease, stage: str) -> None:
        with self._changed:
            self._stages[lease.claim] = stage
            self._changed.notify()

    def held(self) -> list[Lease]:
        with self._changed:
            return list(self._leases.values())

    def _run(self) -> None:
        interval = get_settings().heartbeat_interval_s
        next_beat = time.monotonic() + interval
        while True:
            with self._changed:
                timeout = max(0.0, min(next_beat, self._next_deadline()) - time.monotonic())
                if not self._stages:
                    self._changed.wait(timeout)
                stages, self._stages = self._stages, {}
                leases = list(self._leases.values())
            now = time.monotonic()
            try:
                self._write_stages(stages)
                self._end_expired([lease for lease in leases if lease.deadline <= now])
                if now >= next_beat:
                    next_beat = now + interval
                    self._beat([lease for lease in leases if not lease.lost])
            except Exception as exc:  # the database may be restarting: try next beat
                log.warning("lease keeper: database write failed (%s)", type(exc).__name__)

    def _next_deadline(self) -> float:
        live = [lease.deadline for lease in self._leases.values() if not lease.lost]
        return min(live, default=float("inf"))

    def _lease(self, claim: Claim) -> Lease | None:
        with self._changed:
            return self._leases.get(claim)

    def _write_stages(self, stages: dict[Claim, str]) -> None:
        for claim, stage in stages.items():
            # One statement: no BEGIN and COMMIT around it (session_scope).
            with session_scope(autocommit=True) as session:
                kept = set_stage(session=session, claim=claim, stage=stage)
            if not kept and (lease := self._lease(claim)) is not None:
                lease.lost = True

    def _beat(self, leases: list[Lease]) -> None:
        if not leases:
            return
        with session_scope(autocommit=True) as session:
            kept = heartbeat_many(session=session, claims=[lease.claim for lease in leases])
        for lease in leases:
            if lease.claim.job_id not in kept:
                lease.lost = True  # canceled or taken over: the run's writes will be refused

    def _end_expired(self, leases: list[Lease]) -> None:
        for lease in leases:
            if lease.lost:
                continue
            lease.lost = lease.timed_out = True
            with session_scope() as session:
                ended = fail_job(
                    session=session,
                    claim=lease.claim,
                    code=TIME_LIMIT_CODE,
                    message="The job ran longer than this service allows (RUNNING_TIMEOUT_S) "
                    "and was stopped.",
                )
            if ended:
                log.warning(
                    "job %s: failed with %s",
                    lease.claim.job_id,
                    TIME_LIMIT_CODE,
                    extra={
                        "job_id": str(lease.claim.job_id),
                        "attempt": lease.claim.attempt,
                        "code": TIME_LIMIT_CODE,
                        "event": "failed",
                    },
                )


_keeper_lock = threading.Lock()
_keeper: LeaseKeeper | None = None
_keeper_pid: int | None = None


def keeper() -> LeaseKeeper:
    """This process's keeper (a forked child gets its own: threads do not survive a fork)."""
    global _keeper, _keeper_pid
    with _keeper_lock:
        if _keeper is None or _keeper_pid != os.getpid():
            _keeper, _keeper_pid = LeaseKeeper(), os.getpid()
        return _keeper


@contextmanager
def holding(claim: Claim) -> Iterator[Lease]:
    owner = keeper()
    lease = owner.hold(claim)
    try:
        yield lease
    finally:
        owner.release(lease)


def holder_is_dead(holder: str | None) -> bool:
    """Whether a claim's holder (this_worker()) is a process of this host that is gone.

    Only this host's processes can be checked; anything else is "not known dead"
    and is left to the sweeper's lease timeout. A pid now used by a process that
    started at another time is gone (a restarted container reuses small pids); a
    holder without a start time (an older release's) reads alive then: the safe side.
    """
    parsed = parse_holder(holder)
    if parsed is None or parsed[0] != socket.gethostname():
        return False
    _, pid, start, namespace = parsed
    if namespace is not None and namespace != pid_namespace():
        return False  # another node with this hostname: its pids are not ours to judge
    if process_is_gone(pid):
        return True
    now_started = process_start(pid)
    return start is not None and now_started is not None and now_started != start


def process_is_gone(pid: int) -> bool:
    """Whether a process of this host has ended (a zombie, not yet reaped, has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False
