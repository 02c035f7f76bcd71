"""Whole stacks of real processes: the emulator, the API, Celery workers and beat."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.services import Services
from tests.stack import Stack, base_env, free_port, start, wait_http

# The published per-token limits would pace the suite's many jobs per token;
# tests of pacing start stacks of their own with tight limits.
UNPACED = {
    "UPSTREAM_FITS_PER_MINUTE": "100000",
    "UPSTREAM_PREDICTIONS_PER_MINUTE": "100000",
    "UPSTREAM_UPLOADS_PER_MINUTE": "100000",
    "UPSTREAM_FITS_PER_HOUR": "1000000",
    "UPSTREAM_PREDICTIONS_PER_HOUR": "1000000",
    "UPSTREAM_UPLOADS_PER_HOUR": "1000000",
}


@contextmanager
def running_stack(
    *,
    services: Services,
    database_url: str,
    scratch: Path,
    secret_key: str,
    tokens: list[str],
    worker_args: tuple[str, ...] = ("--concurrency", "2"),
    beat: bool = False,
    **settings: str,
) -> Iterator[Stack]:
    """Start a stack on free ports; `settings` override the environment of every process."""
    logs = scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    emulator_port, api_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    env = base_env(
        DATABASE_URL=database_url,
        REDIS_URL=services.redis_url,
        SECRET_KEY=secret_key,
        TABPFN_API_URL=emulator_url,
        EMULATOR_TOKENS=",".join(tokens),
        # DEBUG: the test that searches every log line for secrets sees the most.
        LOG_LEVEL="DEBUG",
        # Fault tests need retries in seconds, not minutes, and limits that follow
        # the emulator's knobs at once.
        RETRY_BACKOFF_S="1",
        MAX_ATTEMPTS="3",
        UPSTREAM_CALL_TIMEOUT_S="3",
        UPSTREAM_SETTINGS_TTL_S="0",
        MAX_REQUEST_BYTES="2000000",
        # A queue of this run's own: another run on the same Redis cannot take its jobs.
        CELERY_QUEUE=f"tabpfn-api-test-{uuid.uuid4().hex[:8]}",
        # Webhook receivers in tests listen on loopback; retries come fast.
        WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
        WEBHOOK_RETRY_SCHEDULE_S="0.5,1,2",
        # tabpfn-client caches tokens under HOME: keep it away from the real one.
        HOME=str(scratch),
        **UNPACED,
    )
    env.update(settings)
    running = Stack(api_url=f"http://127.0.0.1:{api_port}", emulator_url=emulator_url, env=env)
    try:
        emulator = start("emulator", ["emulator", "--port", str(emulator_port)], env, logs)
        running.processes.append(emulator)
        wait_http(f"{emulator_url}/", emulator)
        api = start("api", ["api", "--port", str(api_port)], env, logs)
        running.processes.append(api)
        worker_argv = ["worker", *worker_args, "--without-mingle", "--without-gossip"]
        running.processes.append(start("worker", worker_argv, env, logs))
        if beat:
            running.processes.append(start("beat", ["beat"], env, logs))
        # The API warms up (imports, first connections) before it answers.
        wait_http(f"{running.api_url}/healthz", api, timeout=90)
        yield running
    finally:
        running.stop()
