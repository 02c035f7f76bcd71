"""The stack a benchmark run measures, started from scratch and torn down after.

PostgreSQL and Redis come from the same place as in the test suite
(DATABASE_URL/REDIS_URL, else 127.0.0.1, else embedded: cli/throwaway.py); the
database is a fresh one. The emulator, the API and the workers are started
with the real `tabpfn-api` commands, as a deployment would (cli/supervisor.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from bench.memory import children, cpu_by_process, pids_named
from cli.ports import free_port
from cli.supervisor import WORKER_READY, Child, start, wait_for_http, wait_for_line
from cli.throwaway import (
    UNPACED,
    answers,
    find_services,
    stack_env,
    throwaway_database,
)

ROOT_DIR = Path(__file__).resolve().parents[1]
SECRET_KEY = "bench-secret-key-not-for-production"
SERVICE_TOKEN = "bench-service-token"
DIRECT_TOKEN = "bench-direct-token"
# Tokens of the sections of issues 13/14: each section's users have tokens of
# their own, so one section's emulator accounts and rate windows never carry
# over into another's.
SECTION_TOKENS = {
    "inflight": "bench-inflight-token",
    "inflight-direct": "bench-inflight-direct-token",
    "pools": "bench-pools-token",
    "pools-direct": "bench-pools-direct-token",
    "coldstart": "bench-cold-token",
    "coldstart-direct": "bench-cold-direct-token",
    "scaleout": "bench-scale-token",
    "noisy": "bench-noisy-token",
    "small": "bench-small-token",
    "burst": "bench-burst-token",
    "bystander": "bench-bystander-token",
    "floor": "bench-floor-token",  # bench/floor.py's worker
}
# One bench user drives up to 64 jobs at once: MAX_RUNNING_PER_USER (default 16)
# must not cap it outside the fairness section.
BENCH_MAX_RUNNING_PER_USER = "1000"
# The suite takes Redis databases 1-14 and `tabpfn-api dev` 0; a benchmark
# sharing a database with a concurrent test run could lose jobs to its workers.
BENCH_REDIS_DB = 15
# A worker drains the jobs it holds before it exits.
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Settings:
    latency_s: float
    worker_concurrency: int
    emulator_max_rows: int
    max_request_bytes: int
    # The near-zero-CPU stand-in (EMULATOR_MODEL=trivial): the upstream's compute
    # is not on our machine, so the bench must not put it there (issue 13).
    emulator_model: str = "trivial"


@dataclass
class BenchStack:
    env: dict[str, str]
    emulator_url: str
    api_url: str  # API_KEY_CACHE_S=60 (the default)
    api_nocache_url: str  # a second API process with API_KEY_CACHE_S=0
    services_origin: str
    admin_database_url: str = ""
    scratch: Path = Path()
    # Where the section nodes' logs are kept after the run (the raw-data directory).
    logs_dir: Path | None = None
    processes: dict[str, Child] = field(default_factory=dict)
    worker_args: list[str] = field(default_factory=list)

    def pid(self, name: str) -> int:
        return self.processes[name].popen.pid

    def cpu_by_part(self, workers: dict[str, list[int]], direct_pid: int) -> dict:
        """CPU so far of each part of a run, by process (`bench.memory.cpu_spent` takes
        two of these); `workers` names the worker processes measured. PostgreSQL and
        Redis are the whole servers."""
        return cpu_by_process(
            {
                # With API_PROCESSES > 1, uvicorn's supervisor and its serving children.
                "API": [self.pid("api"), *children(self.pid("api"))],
                **workers,
                "PostgreSQL": pids_named("postgres"),
                "Redis": pids_named("redis-server"),
                "emulator": [self.pid("emulator")],
                "direct client": [direct_pid],
                "load generator (this process)": [os.getpid()],
            }
        )

    def resent_messages(self) -> int:
        """Job messages the sweeper had to send again (their first one never arrived)."""
        lines = self.processes["worker"].log().splitlines()
        return sum(
            int(line.split("lost run(s) queued again, ")[1].split(" failed")[0])
            + int(line.rsplit("failed for good, ", 1)[1].split(" message")[0])
            for line in lines
            if "sweeper:" in line and "message(s) resent" in line
        )

    def set_latency(self, seconds: float) -> None:
        self.configure_emulator(latency_s=seconds)

    def configure_emulator(self, **knobs) -> None:
        httpx.patch(f"{self.emulator_url}/_emulator/config", json=knobs).raise_for_status()

    def emulator_stats(self) -> dict:
        """The emulator's own CPU seconds and calls by kind (GET /_emulator/stats)."""
        return httpx.get(f"{self.emulator_url}/_emulator/stats").raise_for_status().json()

    @contextmanager
    def main_worker_stopped(self) -> Iterator[None]:
        """Stop the main worker for a section that starts its own nodes; restart it after.

        PostgreSQL decides who runs next, so a live main worker would claim the
        section's jobs whatever queue its messages went to.
        """
        self.processes["worker"].stop(STOP_TIMEOUT_S)
        try:
            yield
        finally:
            process = start_in(self.scratch, "worker", self.worker_args, self.env)
            self.processes["worker"] = process
            wait_for_line(process, WORKER_READY)


def start_in(scratch: Path, name: str, args: list[str], env: dict[str, str]) -> Child:
    """`tabpfn-api *args` with its log and working directory in `scratch`."""
    # Not the project directory: no stray .env may change the settings.
    return start(name, args, env, scratch, cwd=scratch)


# Key prefixes of this project's processes (pacing, events, Celery's queue and
# bookkeeping in kombu's Redis transport).
_OUR_KEYS = (b"tabpfn-api", b"_kombu.", b"unacked", b"celery")


def _redis_url(stack: ExitStack, scratch: Path) -> tuple[str | None, str]:
    if os.environ.get("REDIS_URL") or not answers(6379):
        return None, ""
    url = f"redis://127.0.0.1:6379/{BENCH_REDIS_DB}"
    client = redis.Redis.from_url(url)
    leftover = client.keys()
    if not all(key.startswith(_OUR_KEYS) for key in leftover):
        raise SystemExit(
            f"Redis database {BENCH_REDIS_DB} on 127.0.0.1 is not empty; the benchmark "
            "needs it to itself (FLUSHDB it, or set REDIS_URL)."
        )
    # Only this project's keys: what an earlier run left (a pacing window's keys
    # written by a node that was still stopping when that run flushed, say).
    client.flushdb()
    stack.callback(client.flushdb)
    return url, "redis@127.0.0.1 (db 15)"


def start_stack(stack: ExitStack, scratch: Path, settings: Settings) -> BenchStack:
    redis_url, redis_origin = _redis_url(stack, scratch)
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    try:
        services = find_services(stack, scratch / "services")
    finally:
        if redis_url:
            del os.environ["REDIS_URL"]
    origin = services.origin.replace("from environment", "").strip(", ")
    origin = ", ".join(o for o in (origin, redis_origin) if o)

    database_url = throwaway_database(stack, services)

    home = scratch / "home"
    home.mkdir()
    emulator_port, api_port, nocache_port = free_port(), free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    env = stack_env(
        database_url,
        services.redis_url,
        SECRET_KEY,
        emulator_url,
        [SERVICE_TOKEN, DIRECT_TOKEN, *SECTION_TOKENS.values()],
        EMULATOR_LATENCY_S=str(settings.latency_s),
        EMULATOR_MAX_ROWS=str(settings.emulator_max_rows),
        EMULATOR_MODEL=settings.emulator_model,
        MAX_RUNNING_PER_USER=BENCH_MAX_RUNNING_PER_USER,
        # A queue of this run's own: a test run on the same Redis cannot take its wake-ups.
        CELERY_QUEUE=f"tabpfn-api-bench-{uuid.uuid4().hex[:8]}",
        **UNPACED,
        RATE_LIMIT_PER_MINUTE="0",
        API_KEY_CACHE_S="60",
        MAX_REQUEST_BYTES=str(settings.max_request_bytes),
        LOG_LEVEL="INFO",
        # The sweeper runs as in production, faster: a job whose broker message
        # went missing is sent again within seconds, and the run counts it.
        SWEEPER_INTERVAL_S="5",
        QUEUED_TIMEOUT_S="30",
        HOME=str(home),
    )
    running = BenchStack(
        env=env,
        emulator_url=emulator_url,
        api_url=f"http://127.0.0.1:{api_port}",
        api_nocache_url=f"http://127.0.0.1:{nocache_port}",
        services_origin=origin,
        admin_database_url=services.admin_database_url,
        scratch=scratch,
    )
    running.worker_args = [
        "worker",
        "--concurrency",
        str(settings.worker_concurrency),
        "--without-mingle",
        "--without-gossip",
        "--hostname",
        f"bench-{uuid.uuid4().hex[:6]}@%h",
    ]
    plan = [
        ("emulator", ["emulator", "--port", str(emulator_port)], env),
        ("api", ["api", "--port", str(api_port)], env),
        ("api-nocache", ["api", "--port", str(nocache_port)], {**env, "API_KEY_CACHE_S": "0"}),
        ("worker", running.worker_args, env),
        ("beat", ["beat"], env),
    ]
    for name, args, process_env in plan:
        running.processes[name] = start_in(scratch, name, args, process_env)
        stack.callback(lambda name=name: running.processes[name].stop(STOP_TIMEOUT_S))
    wait_for_http(f"{emulator_url}/", running.processes["emulator"], timeout=30)
    wait_for_http(f"{running.api_url}/readyz", running.processes["api"], timeout=60)
    api_nocache = running.processes["api-nocache"]
    wait_for_http(f"{running.api_nocache_url}/healthz", api_nocache, timeout=60)
    return running
