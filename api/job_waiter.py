"""Wake long-polls and event streams the moment a job changes.

One Redis subscription per API process (not one per waiting client) fans
job-change messages out to the requests waiting on those jobs. Waiters also
wake every RECHECK_S seconds to re-read Postgres, so a lost message or a
Redis outage costs latency, never a wrong answer.

The last few thousand ends are remembered for a minute: a submit that waits for
its own job (`POST /jobs/...?wait=S`) starts watching only after its job was
sent to the workers, and an end that came in between is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from shared.core.config import get_settings
from shared.core.redis_client import redis_py_url
from shared.jobs.events import CHANNEL, parse_change
from shared.jobs.states import FINISHED

log = logging.getLogger(__name__)
RECHECK_S = 5.0
# Ends kept for watches that start late (a waiting submit): how many, and how long.
RECENT_ENDS = 4096
RECENT_END_S = 60.0


@dataclass(eq=False)
class Watch:
    """One waiter's view of a job: set on each change (or only at its end)."""

    only_when_finished: bool
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # The finished job's fields, when the message that ended it carried them.
    final: dict[str, Any] | None = None


class JobWaiter:
    def __init__(self) -> None:
        self._waiting: dict[str, set[Watch]] = defaultdict(set)
        self._task: asyncio.Task | None = None
        # job id -> (monotonic time of the message, the final fields or None)
        self._recent_ends: OrderedDict[str, tuple[float, dict[str, Any] | None]] = OrderedDict()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="job-change-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        url = redis_py_url(get_settings().require("REDIS_URL").redis_url)
        backoff = 0.5
        while True:
            try:
                client = aioredis.Redis.from_url(url)
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    backoff = 0.5
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._wake(*parse_change(message["data"].decode()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: waiters still re-check
                log.warning("job change listener: %s; reconnecting", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _wake(self, job_id: str, status: str, final: dict[str, Any] | None) -> None:
        finished = status in FINISHED
        if finished:
            self._remember_end(job_id, final)
        for watch in self._waiting.get(job_id, ()):
            if finished or not watch.only_when_finished:
                if finished:
                    watch.final = final
                watch.changed.set()

    def _remember_end(self, job_id: str, final: dict[str, Any] | None) -> None:
        ends = self._recent_ends
        ends[job_id] = (time.monotonic(), final)
        ends.move_to_end(job_id)
        while len(ends) > RECENT_ENDS:
            ends.popitem(last=False)

    def _ended_lately(self, job_id: str) -> tuple[float, dict[str, Any] | None] | None:
        seen = self._recent_ends.get(job_id)
        if seen is None or time.monotonic() - seen[0] > RECENT_END_S:
            return None
        return seen

    @contextlib.asynccontextmanager
    async def watching(
        self, job_id: str, *, only_when_finished: bool = False
    ) -> AsyncIterator[Watch]:
        """A watch woken on each change of the job (or only when it finishes). Enter
        before reading its state, so a change between the read and the wait is not
        missed."""
        watch = Watch(only_when_finished)
        ended = self._ended_lately(job_id)
        if ended is not None:  # the end came before the watch: it is not missed
            watch.final = ended[1]
            watch.changed.set()
        self._waiting[job_id].add(watch)
        try:
            yield watch
        finally:
            self._waiting[job_id].discard(watch)
            if not self._waiting[job_id]:
                del self._waiting[job_id]


async def next_change(watch: Watch, timeout: float) -> None:
    """Return at the job's next change, or after `timeout` (at most RECHECK_S)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watch.changed.wait(), timeout=min(timeout, RECHECK_S))
    watch.changed.clear()
