"""Whole stacks of real processes for end-to-end tests: the emulator, the API,
Celery workers and beat.

Each is started with the `tabpfn-api` command a user would run, on a free
port, with its output kept in a log file that a failing test can print
(cli/supervisor.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from cli.ports import free_port
from cli.supervisor import Child, start, stop_all, wait_for_http
from cli.throwaway import (
    UNPACED,
    Services,
    create_database,
    drop_database,
    migrate,
    stack_env,
)

# Enough for a worker's warm shutdown: the suite's jobs take a second or two.
STOP_TIMEOUT_S = 15.0


@dataclass
class Stack:
    api_url: str
    emulator_url: str
    env: dict[str, str]
    processes: list[Child] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(f"----- {p.name} -----\n{p.log()[-6000:]}" for p in self.processes)

    def stop(self) -> None:
        stop_all(self.processes, STOP_TIMEOUT_S)

    def sql(self, query: str, **params) -> list:
        """Run one statement in the stack's database (committed) and return its rows."""
        engine = create_engine(self.env["DATABASE_URL"])
        with engine.begin() as connection:
            rows = connection.execute(text(query), params).all()
        engine.dispose()
        return rows

    @contextmanager
    def extra_api(self, name: str, log_dir: Path, **settings: str) -> Iterator[tuple[str, Child]]:
        """Another API process beside the main one (same database and Redis) with
        some settings changed; yields its `/api/v1` base URL and the process."""
        port = free_port()
        process = start(name, ["api", "--port", str(port)], {**self.env, **settings}, log_dir)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
            yield f"http://127.0.0.1:{port}/api/v1", process
        finally:
            process.stop(STOP_TIMEOUT_S)


def extra_api_url(stack: Stack, tmp_path_factory, name: str, **settings: str) -> Iterator[str]:
    """For a module fixture (`yield from` it): the `/api/v1` URL of another API process
    beside the stack's, named `api-<name>`, with `settings` changed."""
    with stack.extra_api(f"api-{name}", tmp_path_factory.mktemp(name), **settings) as (url, _):
        yield url


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
    api_settings: dict[str, str] | None = None,
    **settings: str,
) -> Iterator[Stack]:
    """Start a stack on free ports; `settings` override the environment of every process,
    `api_settings` that of its API process alone."""
    logs = scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    emulator_port, api_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    env = stack_env(
        database_url,
        services.redis_url,
        secret_key,
        emulator_url,
        tokens,
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
        # Webhook receivers in tests listen on loopback; retries come fast, and a
        # receiver that does not answer is given up on in seconds.
        WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
        WEBHOOK_RETRY_SCHEDULE_S="0.5,1,2",
        WEBHOOK_TIMEOUT_S="3",
        # tabpfn-client caches tokens under HOME: keep it away from the real one.
        HOME=str(scratch),
        # Every process opens its pool's connections as it starts (warm-up), and
        # `make test` runs stacks side by side on one PostgreSQL (100 connections
        # by default): a small pool, overflowing as a burst needs.
        DB_POOL_SIZE="2",
        **UNPACED,
    )
    env.update(settings)
    running = Stack(api_url=f"http://127.0.0.1:{api_port}", emulator_url=emulator_url, env=env)
    try:
        emulator = start("emulator", ["emulator", "--port", str(emulator_port)], env, logs)
        running.processes.append(emulator)
        wait_for_http(f"{emulator_url}/", emulator, timeout=30)
        api_env = {**env, **(api_settings or {})}
        api = start("api", ["api", "--port", str(api_port)], api_env, logs)
        running.processes.append(api)
        worker_argv = ["worker", *worker_args, "--without-mingle", "--without-gossip"]
        running.processes.append(start("worker", worker_argv, env, logs))
        if beat:
            running.processes.append(start("beat", ["beat"], env, logs))
        # The API warms up (imports, first connections) before it answers.
        wait_for_http(f"{running.api_url}/healthz", api)
        yield running
    finally:
        running.stop()


@contextmanager
def own_stack(services: Services, scratch: Path, **options) -> Iterator[Stack]:
    """A stack with a database of its own (created, migrated, dropped after)."""
    url = create_database(services.admin_database_url)
    migrate(url)
    try:
        with running_stack(
            services=services,
            database_url=url,
            scratch=scratch,
            secret_key=f"own-{uuid.uuid4().hex}",
            **options,
        ) as stack:
            yield stack
    finally:
        drop_database(services.admin_database_url, url)


@contextmanager
def api_client(stack: Stack, request) -> Iterator[httpx.Client]:
    """An httpx client on the stack's /api/v1; prints the stack's logs if the test failed."""
    with httpx.Client(base_url=f"{stack.api_url}/api/v1", timeout=30) as api:
        yield api
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(stack.logs())


# A small fit-predict: tests of scheduling care about how many jobs and when, not data.
SMALL_FIT_PREDICT = {
    "task": "classification",
    "train": {"X": [[i, i % 3] for i in range(20)], "y": [i % 2 for i in range(20)]},
    "test": {"X": [[1, 1], [2, 0]]},
}


def submit_small(api: httpx.Client, headers: dict) -> str:
    """Submit SMALL_FIT_PREDICT; its job id."""
    response = api.post("/jobs/fit-predict", json=SMALL_FIT_PREDICT, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]
