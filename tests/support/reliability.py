"""A private stack for crash tests: databases, broker and processes we may kill.

Everything runs on an embedded PostgreSQL and an embedded Redis of this module
alone (unix sockets in a short /tmp directory), so restarting or wiping them
never touches the machine's services or another test session. The processes
are the real commands a deployment runs: the emulator, `tabpfn-api api`,
`tabpfn-api beat` (the sweeper) and `tabpfn-api worker` nodes, started and
stopped by the tests. Reliability settings are shortened to seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from cli.embedded import EmbeddedService, start_embedded_postgres, start_embedded_redis
from cli.supervisor import WORKER_READY, Child, start, stop_all, wait_for_line
from emulator.accounts import account_name

SECRET_KEY = "reliability-secret-key-not-for-production"
# One TabPFN account per test keeps the emulator's call counts per test clean.
TOKENS = [f"rel-{name}-token" for name in ("ref", *(f"t{i}" for i in range(1, 17)))]

# Seconds instead of minutes, so a lost run is noticed and recovered within a test.
RELIABILITY_SETTINGS = {
    "SWEEPER_INTERVAL_S": "1",
    "QUEUED_TIMEOUT_S": "3",
    "HEARTBEAT_INTERVAL_S": "0.5",
    "LEASE_TIMEOUT_S": "3",
    "MAX_ATTEMPTS": "3",
    "RETRY_BACKOFF_S": "0.5",
    "UPSTREAM_CALL_TIMEOUT_S": "30",
}

TRAIN = {
    "X": [[float(i), "red" if i % 2 else "blue"] for i in range(12)],
    "y": ["low"] * 6 + ["high"] * 6,
    "columns": ["size", "colour"],
}
TEST = {"X": [[1.0, "red"], [10.0, "blue"], [5.5, "red"], [7.0, "blue"]]}
FIT_PREDICT = {"task": "classification", "train": TRAIN, "test": TEST}
CLASSES = ["high", "low"]


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Worker:
    """A `tabpfn-api worker` node: a parent and its forked processes, jobs on threads."""

    hostname: str
    process: Child

    @property
    def pid(self) -> int:
        return self.process.popen.pid

    def alive(self) -> bool:
        return self.process.popen.poll() is None


@dataclass
class User:
    """A registered user of the API, with one TabPFN token (= one emulator account)."""

    client: httpx.Client
    token: str
    headers: dict[str, str]

    def submit(self, body: dict | None = None, path: str = "/jobs/fit-predict") -> str:
        response = self.client.post(path, json=body or FIT_PREDICT, headers=self.headers)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict:
        response = self.client.get(f"/jobs/{job_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    def result(self, job_id: str) -> dict:
        response = self.client.get(f"/jobs/{job_id}/result", headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, job_id: str, timeout: float = 45) -> dict:
        """Poll until the job has finished; returns its final state."""
        job: dict = {}

        def finished() -> bool:
            nonlocal job
            job = self.job(job_id)
            return job["status"] in ("succeeded", "failed", "canceled")

        # 4 polls a second stays well within the API's per-key rate limit.
        wait_until(finished, timeout, f"job {job_id} to finish", interval=0.25)
        return job


@dataclass
class RelStack:
    root: Path
    pg: EmbeddedService
    redis: EmbeddedService
    database_url: str
    env: dict[str, str]
    emulator_url: str
    api_url: str
    processes: list[Child] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    reference: dict | None = None
    _worker_seq: int = 0
    _celery: Celery | None = None
    _tokens: list[str] = field(default_factory=lambda: list(TOKENS[1:-1]))

    # --- processes -----------------------------------------------------------

    def start_worker(
        self, concurrency: int = 2, wait: bool = True, processes: int | None = None
    ) -> Worker:
        """A node; `processes`: its WORKER_PROCESSES (the default, 1, when None)."""
        self._worker_seq += 1
        hostname = f"rel-w{self._worker_seq}@localhost"
        args = ["worker", "--concurrency", str(concurrency), "--without-mingle"]
        args += ["--without-gossip", "-n", hostname]
        env = self.env if processes is None else {**self.env, "WORKER_PROCESSES": str(processes)}
        process = start(f"worker-{self._worker_seq}", args, env, self.root / "logs")
        worker = Worker(hostname=hostname, process=process)
        self.workers.append(worker)
        if wait:
            self.wait_worker_ready(worker)
        return worker

    def wait_worker_ready(self, worker: Worker, timeout: float = 30) -> None:
        wait_for_line(worker.process, WORKER_READY, timeout)

    @contextlib.contextmanager
    def sweeper_paused(self) -> Iterator[None]:
        """SIGSTOP `beat` (no sweeps are sent; one already sent may still run)."""
        [beat] = [p for p in self.processes if p.name == "beat"]
        beat.popen.send_signal(signal.SIGSTOP)
        try:
            time.sleep(1.5)  # a sweep sent just before the pause has run by now
            yield
        finally:
            beat.popen.send_signal(signal.SIGCONT)

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.alive()]

    def stop_worker(self, worker: Worker, timeout: float = 30) -> None:
        """SIGTERM (Celery's warm shutdown: running tasks finish) and wait for the exit."""
        if worker.alive():
            worker.process.popen.send_signal(signal.SIGTERM)
            try:
                worker.process.popen.wait(timeout)
            except Exception:
                self.kill_worker(worker)
                raise
        self._reap_group(worker)

    def kill_worker(self, worker: Worker) -> None:
        """kill -9 the whole node: main process and pool processes at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.process.popen.wait(10)
        self._reap_group(worker)

    def _reap_group(self, worker: Worker) -> None:
        # Pool processes outliving their parent would keep consuming: wait them out.
        # Zombies (no reaping init in some containers) hold no broker connection.
        def gone() -> bool:
            left = []
            for process in psutil.process_iter(["status"]):
                try:
                    if os.getpgid(process.pid) == worker.pid and process.info["status"] not in (
                        psutil.STATUS_ZOMBIE,
                        psutil.STATUS_DEAD,
                    ):
                        left.append(process.pid)
                except (ProcessLookupError, psutil.Error):
                    continue
            if left:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
            return not left

        wait_until(gone, 10, f"{worker.hostname}'s process group to exit")

    def stop_all_workers(self) -> None:
        for worker in self.live_workers():
            self.stop_worker(worker)

    # --- broker and database ---------------------------------------------------

    @property
    def redis_socket(self) -> str:
        return str(self.redis.data_dir / "redis.sock")

    def redis_client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.redis_socket, socket_timeout=5)

    def queue_length(self, queue: str = "celery") -> int:
        with self.redis_client() as client:
            return client.llen(queue)

    def queued_deliveries(self, job_id: str, queue: str = "celery") -> int:
        """How many `jobs.run` messages for `job_id` wait in the broker's queue."""
        with self.redis_client() as client:
            messages = [json.loads(m) for m in client.lrange(queue, 0, -1)]
        return sum(1 for m in messages if _runs(m, job_id))

    def unacked_deliveries(self, job_id: str) -> int:
        """How many `jobs.run` messages for `job_id` a worker holds and has not acked."""
        with self.redis_client() as client:
            # kombu's Redis transport: delivery tag -> [message, exchange, routing key].
            held = [json.loads(v)[0] for v in client.hgetall("unacked").values()]
        return sum(1 for m in held if _runs(m, job_id))

    def flush_redis(self) -> None:
        with self.redis_client() as client:
            client.flushdb()

    def stop_redis(self) -> None:
        self.redis.stop()

    def start_redis(self) -> None:
        if not self.redis.is_running():
            self.redis = start_embedded_redis(self.redis.data_dir)
            self._drop_celery()  # its pooled connections point at the old server

    def restart_redis(self) -> None:
        self.stop_redis()
        self.start_redis()

    def stop_postgres(self) -> None:
        self.pg.stop()

    def start_postgres(self) -> None:
        if not self.pg.is_running():
            self.pg = start_embedded_postgres(self.pg.data_dir)

    def restart_postgres(self) -> None:
        self.stop_postgres()
        self.start_postgres()

    def sql(self, query: str, **params: Any) -> list[Any]:
        # NullPool: a connection never outlives a query, so restarts leave none stale.
        engine = create_engine(self.database_url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                return list(connection.execute(text(query), params).all())
        finally:
            engine.dispose()

    def job_row(self, job_id: str) -> Any:
        [row] = self.sql(
            "select status, stage, attempts, error_code, model_id, worker from jobs where id = :id",
            id=job_id,
        )
        return row

    def wait_running(self, job_id: str, attempt: int = 1, timeout: float = 20) -> Any:
        """Wait until run number `attempt` of the job is under way upstream."""

        def running() -> Any:
            row = self.job_row(job_id)
            if row.status in ("succeeded", "failed", "canceled"):
                raise AssertionError(f"job {job_id} finished before it could be hit: {row}")
            # The claim enters the first upstream stage at once.
            ok = row.status == "running" and row.attempts == attempt
            return row if ok else None

        return wait_until(running, timeout, f"job {job_id} running (attempt {attempt})", 0.05)

    # --- the emulator -----------------------------------------------------------

    def emulator(self, **knobs: Any) -> None:
        response = httpx.patch(f"{self.emulator_url}/_emulator/config", json=knobs, timeout=10)
        response.raise_for_status()

    def upstream_calls(self, token: str, path: str = "/tabpfn/fit") -> list[dict]:
        calls = httpx.get(f"{self.emulator_url}/_emulator/calls", timeout=10).json()
        return [c for c in calls if c["path"] == path and c["account"] == account_name(token)]

    # --- the API ------------------------------------------------------------------

    @property
    def celery(self) -> Celery:
        """A Celery client of the test's own, to deliver tasks and ask workers.

        Every use opens a connection of its own (see `deliver`): kombu's pools are
        process-wide, and a pooled connection would outlive a Redis restart.
        """
        if self._celery is None:
            self._celery = Celery("reliability-tests", broker=self.redis.celery_url)
            self._celery.conf.update(
                broker_connection_timeout=3, broker_connection_retry=False, broker_pool_limit=0
            )
        return self._celery

    def deliver(self, job_id: str) -> None:
        """Send the `jobs.run` task for `job_id` as the API and the sweeper do."""
        with self.celery.connection_for_write() as connection:
            self.celery.send_task("jobs.run", args=[job_id], connection=connection)

    def _drop_celery(self) -> None:
        if self._celery is not None:
            self._celery.close()
            self._celery = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.api_url}/api/v1", timeout=30)

    def new_user(self, client: httpx.Client) -> User:
        """Register a user with a TabPFN token (emulator account) no other test uses."""
        token = self._tokens.pop(0)
        return register(client, token)

    # --- diagnostics ----------------------------------------------------------------

    def logs(self, tail: int = 5000) -> str:
        parts = [f"----- {p.name} -----\n{p.log()[-tail:]}" for p in self.processes]
        parts += [f"----- {w.process.name} ({w.hostname}) -----\n{w.process.log()[-tail:]}"
                  for w in self.workers]  # fmt: skip
        for service in (self.pg, self.redis):
            if service.log_path.exists():
                log = service.log_path.read_text(errors="replace")[-2000:]
                parts.append(f"----- {service.name} -----\n{log}")
        return "\n".join(parts)

    def stop(self) -> None:
        self._drop_celery()
        for worker in self.live_workers():
            self.kill_worker(worker)
        stop_all(self.processes, timeout=10)
        self.redis.stop()
        self.pg.stop()


def _runs(message: dict, job_id: str) -> bool:
    headers = message.get("headers", {})
    return headers.get("task") == "jobs.run" and job_id in headers.get("argsrepr", "")


def register(client: httpx.Client, token: str) -> User:
    response = client.post("/auth/setup", json={"tabpfn_token": token})
    assert response.status_code == 201, response.text
    headers = {"Authorization": f"Bearer {response.json()['api_key']}"}
    return User(client=client, token=token, headers=headers)
