"""Wake long-polls and event streams the moment a job changes.

One Redis subscription per API process (not one per waiting client) fans
job-change messages out to the requests waiting on those jobs. Waiters also
wake every RECHECK_S seconds to re-read Postgres, so a lost message or a
Redis outage costs latency, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from shared.config import get_settings
from shared.job_events import CHANNEL
from shared.job_states import FINISHED
from shared.redis_client import redis_py_url

log = logging.getLogger(__name__)
RECHECK_S = 5.0


class JobWaiter:
    def __init__(self) -> None:
        # job id -> (event, wakes only when the job finishes?)
        self._waiting: dict[str, set[tuple[asyncio.Event, bool]]] = defaultdict(set)
        self._task: asyncio.Task | None = None

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
                            job_id, _, status = message["data"].decode().partition(" ")
                            self._wake(job_id, status)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: waiters still re-check
                log.warning("job change listener: %s; reconnecting", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _wake(self, job_id: str, status: str) -> None:
        finished = status in FINISHED
        for event, only_when_finished in self._waiting.get(job_id, ()):
            if finished or not only_when_finished:
                event.set()

    @contextlib.asynccontextmanager
    async def watching(
        self, job_id: str, *, only_when_finished: bool = False
    ) -> AsyncIterator[asyncio.Event]:
        """An event set on each change of the job (or only when it finishes). Enter
        before reading its state, so a change between the read and the wait is not
        missed."""
        waiter = (asyncio.Event(), only_when_finished)
        self._waiting[job_id].add(waiter)
        try:
            yield waiter[0]
        finally:
            self._waiting[job_id].discard(waiter)
            if not self._waiting[job_id]:
                del self._waiting[job_id]


async def next_change(event: asyncio.Event, timeout: float) -> None:
    """Return at the job's next change, or after `timeout` (at most RECHECK_S)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=min(timeout, RECHECK_S))
    event.clear()
