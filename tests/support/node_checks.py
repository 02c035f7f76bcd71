"""Checks that a worker node keeps its guarantees, shared by the tests of each pool
(tests/e2e/test_worker_capacity.py for the threads pool, test_worker_pools.py for prefork).

Each drives a stack of real processes (tests/support/stacks.py) through the
emulator's knobs; the caller's stack sets RUNNING_TIMEOUT_S, UPSTREAM_CALL_TIMEOUT_S
long enough that only the deadline ends a hung call, and WORKER_DRAIN_S=2.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
from celery import Celery

from cli.supervisor import BIN, WORKER_READY, start_command, wait_for_line
from shared.jobs.lifecycle import parse_holder
from tests.support.api import wait_for_job
from tests.support.reliability import wait_until
from tests.support.stacks import submit_small as submit


def start_node(
    stack, name: str, args: list[str], *, env: dict | None = None, prefix: tuple[str, ...] = ()
):
    """Another worker node of this stack, `tabpfn-api worker *args` named `name`, ready;
    the stack stops it at the end. `env` adds to the stack's; `prefix` runs it (`nohup`)."""
    node = start_command(
        name,
        [*prefix, str(BIN), "worker", *args, "-n", f"{name}@%h"]
        + ["--without-mingle", "--without-gossip"],
        {**stack.env, **(env or {})},
        stack.scratch / "logs",
    )
    stack.processes.append(node)
    wait_for_line(node, WORKER_READY)
    return node


def remote_shutdown(stack, pid: int) -> Callable[[], None]:
    """What Flower's "Shut Down" sends (Celery's remote `shutdown`) to the worker that
    process `pid` runs, ready to send: its name, as Flower shows it, is asked now."""
    control = Celery(broker=stack.env["REDIS_URL"]).control
    stats = control.inspect(timeout=2).stats() or {}
    names = [name for name, stat in stats.items() if stat["pid"] == pid]
    assert len(names) == 1, (pid, {name: stat["pid"] for name, stat in stats.items()})
    return lambda: control.shutdown(destination=names)


def emulator(stack, **knobs) -> None:
    httpx.patch(f"{stack.emulator_url}/_emulator/config", json=knobs).raise_for_status()


@contextmanager
def hung_upstream(stack) -> Iterator[None]:
    """Every upstream call hangs (for minutes) until the block ends."""
    emulator(stack, hang_s=300)
    try:
        yield
    finally:
        emulator(stack, hang_s=0)


def wait_until_running(client: httpx.Client, headers: dict, job_id: str) -> None:
    def status() -> bool:
        return client.get(f"/jobs/{job_id}", headers=headers).json()["status"] == "running"

    wait_until(status, 30, f"job {job_id} running")


def holder_pid(claimed_by: str) -> int:
    """The pid in a claim's holder, `jobs.worker` (this_worker())."""
    return parse_holder(claimed_by)[1]


def holders(stack, ids: list[str]) -> set[int]:
    """The pids that claimed these jobs (their last attempts)."""
    rows = stack.sql("select worker from jobs where id = any(cast(:ids as uuid[]))", ids=ids)
    return {holder_pid(row.worker) for row in rows}


def threads_not_blocking(pid: int, signals: set[int]) -> list[str]:
    """The threads of process `pid` in which any of `signals` is not blocked (its
    /proc status's SigBlk mask): the kernel may hand such a signal to any of those.
    A thread waiting for signals in sigwait is left out: the kernel unblocks what it
    waits for while it waits, and takes them there."""
    unblocked = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        if "sigtimedwait" in (task / "wchan").read_text():
            continue
        fields = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines())
        mask = int(fields["SigBlk"], 16)
        if any(not mask >> (sig - 1) & 1 for sig in signals):
            unblocked.append(f"{fields['Name'].strip()} ({task.name})")
    return unblocked


def assert_a_hung_call_ends_at_the_deadline(client, stack, headers, deadline_s: float) -> None:
    with hung_upstream(stack):
        job = wait_for_job(client, headers, submit(client, headers), timeout=60)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "time_limit_exceeded", job
    ran = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    assert deadline_s - 1 <= ran.total_seconds() <= deadline_s + 4, ran


def assert_a_drain_hands_back_the_hung_job(
    client,
    stack,
    headers,
    node,
    *,
    stop: Callable[[], None] | None = None,
    grace_s: float = 2.0,
    at_once: bool = False,
) -> str:
    """Stop the node (`stop`, else SIGTERM to it) while its job hangs upstream: it exits 0
    after its WORKER_DRAIN_S (`grace_s`), or before it (`at_once`: a cold shutdown), and
    the job is queued again, not an attempt; the job's id."""
    with hung_upstream(stack):
        job_id = submit(client, headers)
        wait_until_running(client, headers, job_id)
        stopped = time.monotonic()
        (stop or (lambda: node.popen.send_signal(signal.SIGTERM)))()
        assert node.popen.wait(grace_s + 18) == 0
        took = time.monotonic() - stopped
        if at_once:
            assert took < grace_s, took
        else:  # the hung job was given its grace, then handed back
            assert grace_s <= took < grace_s + 8, took
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        assert (job["status"], job["attempts"]) == ("queued", 0), job
    return job_id
