"""Keep a running job's lease alive while its worker is alive.

The sweeper treats a running job whose heartbeat is older than
LEASE_TIMEOUT_S as abandoned (its worker was killed or lost the database), so
a job is never stuck in `running` for longer than that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from shared.config import get_settings
from shared.db import session_scope
from shared.job_lifecycle import Claim, heartbeat

log = logging.getLogger(__name__)


@contextmanager
def heartbeating(claim: Claim) -> Iterator[None]:
    stop = threading.Event()
    interval = get_settings().heartbeat_interval_s

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with session_scope() as session:
                    if not heartbeat(session=session, claim=claim):
                        return  # canceled or taken over: the run's writes will be refused
            except Exception as exc:  # the database may be restarting: try next beat
                log.warning("job %s: heartbeat failed (%s)", claim.job_id, type(exc).__name__)

    thread = threading.Thread(target=beat, name=f"heartbeat-{claim.job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
