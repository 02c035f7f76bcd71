"""A SIGTERMed API stops within API_DRAIN_S even while a client holds an event stream
open: the stream of a job that never ends (no worker serves this API's database)."""

from __future__ import annotations

import signal
import time
import uuid

import httpx
import pytest

from cli.throwaway import create_database, drop_database, migrate
from tests.support.api import register

DRAIN_S = 2.0
# uvicorn's shutdown after the drain (the lifespan's end, closing pools) and the
# process's exit take a moment more.
EXIT_MARGIN_S = 5.0
TRAIN = {"X": [[1.0], [2.0], [3.0], [4.0]], "y": ["a", "a", "b", "b"]}


@pytest.mark.parametrize("processes", ["1", "2"])
def test_sigterm_ends_open_event_streams_within_the_drain(stack, services, tmp_path, processes):
    url = create_database(services.admin_database_url)
    migrate(url)
    settings = {
        "DATABASE_URL": url,
        "API_DRAIN_S": str(DRAIN_S),
        "API_PROCESSES": processes,
        # No worker reads this queue or this database: the job stays queued.
        "CELERY_QUEUE": f"tabpfn-api-test-shutdown-{uuid.uuid4().hex[:8]}",
        "DB_POOL_SIZE": "2",  # PostgreSQL is shared by the whole suite
    }
    try:
        with (
            stack.extra_api("api-shutdown", tmp_path, **settings) as (api_url, process),
            httpx.Client(base_url=api_url, timeout=30) as api,
        ):
            headers = register(api)
            job = api.post("/jobs/fit", json={"task": "classification", "train": TRAIN},
                           headers=headers)  # fmt: skip
            assert job.status_code == 202, job.text
            events = f"/jobs/{job.json()['id']}/events"
            with api.stream("GET", events, headers=headers) as stream:
                lines = stream.iter_lines()
                assert next(lines) == "event: job"  # the stream is open and served

                process.popen.terminate()
                started = time.monotonic()
                try:
                    process.popen.wait(DRAIN_S + EXIT_MARGIN_S)
                except Exception:
                    pytest.fail(f"the API did not stop within {DRAIN_S + EXIT_MARGIN_S}s")
                assert time.monotonic() - started >= DRAIN_S - 0.5, "cut before the drain"
                # One uvicorn process ends by raising the SIGTERM again once it has shut
                # down; the supervisor of several exits 0.
                assert process.popen.returncode in (0, -signal.SIGTERM), process.log()[-3000:]
                assert "Cancel 1 running task(s), timeout graceful shutdown" in process.log()
    finally:
        drop_database(services.admin_database_url, url)
