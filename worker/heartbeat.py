"""Keep a running job's lease alive, and report its stage, from a thread of its own.

(And tell whether a lease's holder is a process of this host that has died.)

The sweeper treats a running job whose heartbeat is older than
LEASE_TIMEOUT_S as abandoned (its worker was killed or lost the database), so
a job is never stuck in `running` for longer than that.

Stage changes go through the same thread: the job's own thread moves on to
its next upstream call at once instead of waiting for a transaction that only
informs pollers. A lost claim (canceled, or taken over by the sweeper) is
noticed by the thread and raised at the next stage change; the transaction
that stores the outcome checks the claim again in any case.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from shared.config import get_settings
from shared.db import session_scope
from shared.job_lifecycle import Claim, heartbeat, set_stage

log = logging.getLogger(__name__)


class ClaimLost(Exception):
    """The job was canceled or handed to another run while this one worked."""


class Lease:
    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.lost = False
        self._changed = threading.Condition()
        self._stage: str | None = None  # a stage to report, not yet written
        self._stopping = False

    def enter(self, stage: str) -> None:
        """Report that the job entered `stage`; written in the background."""
        if self.lost:
            raise ClaimLost
        with self._changed:
            self._stage = stage
            self._changed.notify()

    def _next(self, interval: float) -> tuple[bool, str | None]:
        """Wait for a stage to report or the next beat; (stop?, stage)."""
        with self._changed:
            if self._stage is None and not self._stopping:
                self._changed.wait(interval)
            stage, self._stage = self._stage, None
            return self._stopping, stage

    def run(self, interval: float) -> None:
        while True:
            stopping, stage = self._next(interval)
            if stopping:
                return
            try:
                with session_scope() as session:
                    if stage is None:
                        kept = heartbeat(session=session, claim=self.claim)
                    else:
                        kept = set_stage(session=session, claim=self.claim, stage=stage)
                if not kept:
                    self.lost = True  # canceled or taken over: the run's writes will be refused
                    return
            except Exception as exc:  # the database may be restarting: try next beat
                log.warning("job %s: heartbeat failed (%s)", self.claim.job_id, type(exc).__name__)

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()


def holder_is_dead(holder: str | None) -> bool:
    """Whether a claim's holder ("<host>:<pid>") is a process of this host that is gone.

    Only this host's processes can be checked; anything else is "not known dead"
    and is left to the sweeper's lease timeout. A reused pid reads as alive: the
    safe side.
    """
    host, _, pid = (holder or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # killed but not yet reaped by its parent
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@contextmanager
def holding(claim: Claim) -> Iterator[Lease]:
    lease = Lease(claim)
    interval = get_settings().heartbeat_interval_s
    thread = threading.Thread(
        target=lease.run, args=(interval,), name=f"lease-{claim.job_id}", daemon=True
    )
    thread.start()
    try:
        yield lease
    finally:
        lease.stop()
        thread.join(timeout=5)
