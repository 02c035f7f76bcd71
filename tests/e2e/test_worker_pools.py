"""A pool other than the default, asked for by name, is the pool the node runs, or is
refused in one line when the process is not set up for it.

The node runs Celery's threads pool unless told otherwise (worker/celery_config.py).
Celery's `--pool` reads "prefork", its own default, as "whatever the configuration
says", so `tabpfn-api worker --pool prefork` used to run threads, silently; the
node now configures the pool it was asked for (worker/node.py). Once prefork ran,
its processes shared the upstream connection the node's warm-up had kept; each
now opens its own (shared/upstream/client.py::renew_after_fork).

Then what the threads pool is proven to keep, proven again under prefork: a job's
deadline, cancel, a node killed and restarted, and SIGTERM's drain, which the node
passes on to the pool processes that run the jobs (worker/lifecycle.py).
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest

from cli.supervisor import BIN, WORKER_READY, wait_for_line
from cli.throwaway import base_env
from tests.support.api import register, wait_for_job
from tests.support.node_checks import (
    assert_a_drain_hands_back_the_hung_job,
    assert_a_hung_call_ends_at_the_deadline,
    emulator,
    holder_pid,
    holders,
    hung_upstream,
    remote_shutdown,
    start_node,
    wait_until_running,
)
from tests.support.reliability import wait_until
from tests.support.stacks import api_client, own_stack
from tests.support.stacks import submit_small as submit

TOKENS = ["pool-a-token", "pool-b-token"]
DEADLINE_S = 10


@pytest.fixture(scope="module")
def prefork_stack(services, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("prefork")
    with own_stack(
        services,
        scratch,
        tokens=TOKENS,
        worker_args=("--pool", "prefork", "--concurrency", "2", "-n", "prefork-1@%h"),
        EMULATOR_MODEL="trivial",
        RUNNING_TIMEOUT_S=str(DEADLINE_S),
        # Long enough that only the job's deadline can end a hung call.
        UPSTREAM_CALL_TIMEOUT_S="120",
        WORKER_DRAIN_S="2",
    ) as stack:
        stack.scratch = scratch
        yield stack


@pytest.fixture
def client(prefork_stack, request):
    with api_client(prefork_stack, request) as api:
        yield api


def _upstream_sockets(pids: list[int], port: int) -> list[set[int]]:
    """Each process's TCP connections to the upstream, by local port (one socket, one port)."""
    return [
        {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.raddr[1:] == (port,)}
        for pid in pids
    ]


def _shared(sockets: list[set[int]]) -> set[int]:
    return {port for i, a in enumerate(sockets) for b in sockets[i + 1 :] for port in a & b}


def test_a_node_asked_for_prefork_runs_its_jobs_in_prefork_processes(prefork_stack, request):
    [worker] = [p for p in prefork_stack.processes if p.name == "worker"]
    wait_for_line(worker, WORKER_READY)
    node = [worker.pid, *(child.pid for child in psutil.Process(worker.pid).children())]
    upstream = int(prefork_stack.emulator_url.rpartition(":")[2])
    # The node's parent asked the upstream for its limits before it forked the pool:
    # a connection it kept must not live on in the children too, or two processes
    # would write on one socket and read each other's answers (a job failed so).
    assert not _shared(before := _upstream_sockets(node, upstream)), before
    with api_client(prefork_stack, request) as client:
        users = [register(client, token) for token in TOKENS]
        ids = [(headers, submit(client, headers)) for headers in users for _ in range(2)]
        jobs = [wait_for_job(client, headers, job_id) for headers, job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 4, [j.get("error") for j in jobs]
    assert not _shared(after := _upstream_sockets(node, upstream)), after

    assert "concurrency: 2 (prefork)" in worker.log()
    claimed_by = holders(prefork_stack, [job_id for _, job_id in ids])
    # Run by the pool's processes, forked from the node, not by the node's own thread.
    pool = {child.pid for child in psutil.Process(worker.pid).children()}
    assert claimed_by and claimed_by <= pool, (claimed_by, pool)


# What the threads pool is proven to keep (tests/e2e/test_worker_capacity.py,
# tests/e2e/test_job_control.py), proven again for a node that runs prefork.


def test_under_prefork_a_hung_upstream_call_ends_at_the_jobs_deadline(client, prefork_stack):
    headers = register(client, TOKENS[0])
    assert_a_hung_call_ends_at_the_deadline(client, prefork_stack, headers, DEADLINE_S)
    # Neither pool process is lost: two jobs at once still run.
    ids = [submit(client, headers) for _ in range(2)]
    assert [wait_for_job(client, headers, j)["status"] for j in ids] == ["succeeded"] * 2


def test_under_prefork_cancel_stops_a_running_job(client, prefork_stack):
    headers = register(client, TOKENS[1])
    emulator(prefork_stack, hang_s=3)  # each upstream call answers after 3 s
    try:
        job_id = submit(client, headers)
        wait_until_running(client, headers, job_id)
        canceled = client.post(f"/jobs/{job_id}/cancel", headers=headers)
        assert canceled.json()["status"] == "canceled", canceled.text
        time.sleep(5)  # the canceled run's call comes back meanwhile
    finally:
        emulator(prefork_stack, hang_s=0)
    job = client.get(f"/jobs/{job_id}", headers=headers).json()
    assert (job["status"], job["model_id"]) == ("canceled", None), job
    # Its process runs jobs again: two at once take both of the pool's processes.
    ids = [submit(client, headers) for _ in range(2)]
    assert [wait_for_job(client, headers, j)["status"] for j in ids] == ["succeeded"] * 2


def start_prefork_node(stack, name: str):
    """Another prefork node of this stack, ready; the stack stops it at the end."""
    return start_node(stack, name, ["--pool", "prefork", "--concurrency", "2"])


def running_node(stack):
    """The stack's worker node that runs now (the tests below replace it)."""
    return [p for p in stack.processes if p.name.startswith(("worker", "prefork"))][-1]


@contextmanager
def running_hung(client, stack, headers) -> Iterator[tuple[str, str]]:
    """A job running, hung upstream until the block ends: its id and who claimed it."""
    with hung_upstream(stack):
        job_id = submit(client, headers)
        wait_until_running(client, headers, job_id)
        [row] = stack.sql("select worker from jobs where id = :id", id=job_id)
        yield job_id, row.worker


def test_under_prefork_a_pool_process_killed_mid_job_is_replaced_and_its_job_runs_again_at_once(
    client, prefork_stack
):
    headers = register(client, TOKENS[0])
    node = running_node(prefork_stack)
    forked_at_start = {p.pid for p in psutil.Process(node.pid).children()}
    with running_hung(client, prefork_stack, headers) as (job_id, claimed_by):
        holder = psutil.Process(holder_pid(claimed_by))
        assert holder.pid in forked_at_start, (holder, forked_at_start)
        holder.kill()  # SIGKILL, as the OOM killer does: no clean-up code runs in it
        holder.wait(10)
    # No sweeper runs in this stack: only the process billiard forks in its place
    # can see that the claim's process on its host is dead and queue the job again.
    job = wait_for_job(client, headers, job_id, timeout=30)
    assert (job["status"], job["attempts"]) == ("succeeded", 2), job
    assert f"({claimed_by}) died; running it again now" in node.log()

    # The processes billiard forks in place of dead ones run jobs as the first ones
    # did: replace the other one too, then fill both with fit-predicts.
    for process in psutil.Process(node.pid).children():
        if process.pid in forked_at_start:
            process.kill()
            process.wait(10)

    def whole_again() -> list[psutil.Process]:
        pool = psutil.Process(node.pid).children()
        return pool if len(pool) == 2 else []

    replaced = wait_until(whole_again, 30, "the pool made whole again", 0.2)
    assert not {p.pid for p in replaced} & forked_at_start
    ids = [submit(client, headers) for _ in range(4)]
    jobs = [wait_for_job(client, headers, j, timeout=40) for j in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 4, [j["error"] for j in jobs]
    assert holders(prefork_stack, ids) <= {p.pid for p in replaced}


def wait_for_attempt(stack, job_id: str, attempt: int):
    """The job's row once run `attempt` of it is running."""

    def running():
        [row] = stack.sql("select status, attempts, worker from jobs where id = :id", id=job_id)
        return row if (row.status, row.attempts) == ("running", attempt) else None

    return wait_until(running, 30, f"job {job_id} running (attempt {attempt})", 0.05)


def test_under_prefork_a_job_that_kills_its_process_fails_with_worker_lost_alone(
    client, prefork_stack
):
    victim, bystander = (register(client, token) for token in TOKENS)
    emulator(prefork_stack, latency_s=1.0)  # about 4 s a job
    try:
        poison = submit(client, victim)
        others = [submit(client, bystander) for _ in range(2)]
        for attempt in (1, 2, 3):  # MAX_ATTEMPTS=3 in the suite's stacks
            row = wait_for_attempt(prefork_stack, poison, attempt)
            psutil.Process(holder_pid(row.worker)).kill()
        job = wait_for_job(client, victim, poison, timeout=30)
        ended = [wait_for_job(client, bystander, j, timeout=60) for j in others]
    finally:
        emulator(prefork_stack, latency_s=0)
    assert (job["status"], job["error"]["code"], job["attempts"]) == ("failed", "worker_lost", 3)
    # A process per job: the crashes took no other job with them (a threads
    # process takes every job it holds, docs/reliability.md).
    assert [(j["status"], j["attempts"]) for j in ended] == [("succeeded", 1)] * 2, ended


def test_under_prefork_a_node_killed_mid_job_and_restarted_runs_the_job_again_at_once(
    client, prefork_stack
):
    headers = register(client, TOKENS[1])
    node = running_node(prefork_stack)
    with running_hung(client, prefork_stack, headers) as (job_id, claimed_by):
        pool = psutil.Process(node.pid).children()
        assert holder_pid(claimed_by) in {p.pid for p in pool}, claimed_by
        node.popen.kill()  # SIGKILL: no clean-up code runs in the node
        # Its pool processes die with it (pdeathsig): none runs on, holding the job.
        _, alive = psutil.wait_procs(pool, timeout=10)
        assert alive == [], alive
    # No sweeper runs in this stack: only the new node's start-up can see that the
    # claim's process on its host is dead and queue the job again, at once.
    replacement = start_prefork_node(prefork_stack, "prefork-2")
    job = wait_for_job(client, headers, job_id, timeout=30)
    assert (job["status"], job["attempts"]) == ("succeeded", 2), job
    assert f"({claimed_by}) died; running it again now" in replacement.log()


# SIGTERM to the node (docker stop, Kubernetes), or to each of its processes at once
# (systemd's default, KillMode=control-group), or Celery's cold shutdown (SIGQUIT):
# each way the job is handed back.
@pytest.mark.parametrize(
    "sig, to_every_process",
    [(signal.SIGTERM, False), (signal.SIGTERM, True), (signal.SIGQUIT, False)],
    ids=["sigterm-to-node", "sigterm-to-every-process", "sigquit-to-node"],
)
def test_under_prefork_sigterm_drains_then_hands_back_what_is_left(
    client, prefork_stack, sig, to_every_process
):
    headers = register(client, TOKENS[0])
    worker = running_node(prefork_stack)
    pool = psutil.Process(worker.pid).children()

    def stop() -> None:
        for process in pool if to_every_process else []:
            process.send_signal(sig)
        worker.popen.send_signal(sig)

    job_id = assert_a_drain_hands_back_the_hung_job(
        client, prefork_stack, headers, worker, stop=stop
    )
    # By the pool process that ran it, not the node (which holds no job under prefork).
    assert "drain: handed 1 unfinished job(s) back to the queue" in worker.log()
    _, alive = psutil.wait_procs(pool, timeout=5)
    assert alive == [], alive
    start_prefork_node(prefork_stack, f"prefork-{uuid.uuid4().hex[:6]}")
    job = wait_for_job(client, headers, job_id, timeout=60)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), job


def test_under_prefork_a_remote_shutdown_drains_as_sigterm_does(client, prefork_stack):
    """Flower's "Shut Down": the node passes the drain on to its pool processes as on
    SIGTERM (before, it waited for their jobs, however long they hung)."""
    headers = register(client, TOKENS[1])
    worker = running_node(prefork_stack)
    job_id = assert_a_drain_hands_back_the_hung_job(
        client, prefork_stack, headers, worker, stop=remote_shutdown(prefork_stack, worker.pid)
    )
    assert "drain: handed 1 unfinished job(s) back to the queue" in worker.log()
    start_prefork_node(prefork_stack, f"prefork-{uuid.uuid4().hex[:6]}")
    job = wait_for_job(client, headers, job_id, timeout=60)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), job


@pytest.mark.parametrize("pool", ["gevent", "eventlet"])
def test_a_green_pool_in_a_process_nobody_patched_is_refused_in_one_line(pool):
    # Unpatched, each slot's socket reads and queries would block the whole process.
    done = subprocess.run(
        [str(BIN), "worker", "--pool", pool],
        env=base_env(SECRET_KEY="k", DATABASE_URL="postgres://x/y", REDIS_URL="redis://x"),
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"tabpfn-api worker: --pool {pool} needs the process monkey-patched before it "
        "imports anything, which tabpfn-api worker does not do; use the threads pool (the "
        "default) or --pool prefork (docs/operations.md)"
    ]
