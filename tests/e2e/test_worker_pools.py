"""A pool other than the default, asked for by name, is the pool the node runs, or is
refused in one line when the process is not set up for it.

The node runs Celery's threads pool unless told otherwise (worker/celery_config.py).
Celery's `--pool` reads "prefork", its own default, as "whatever the configuration
says", so `tabpfn-api worker --pool prefork` used to run threads, silently; the
node now configures the pool it was asked for (worker/node.py). Once prefork ran,
its processes shared the upstream connection the node's warm-up had kept; each
now opens its own (shared/upstream/client.py::renew_after_fork).
"""

from __future__ import annotations

import subprocess

import psutil
import pytest

from cli.supervisor import BIN, WORKER_READY, wait_for_line
from cli.throwaway import base_env
from tests.support.api import register, wait_for_job
from tests.support.stacks import api_client, own_stack
from tests.support.stacks import submit_small as submit

TOKENS = ["pool-a-token", "pool-b-token"]


@pytest.fixture(scope="module")
def prefork_stack(services, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("prefork")
    with own_stack(
        services,
        scratch,
        tokens=TOKENS,
        worker_args=("--pool", "prefork", "--concurrency", "2"),
        EMULATOR_MODEL="trivial",
    ) as stack:
        yield stack


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
    holders = {
        int(row.worker.rpartition(":")[2])
        for row in prefork_stack.sql(
            "select worker from jobs where id = any(cast(:ids as uuid[]))",
            ids=[job_id for _, job_id in ids],
        )
    }
    # Run by the pool's processes, forked from the node, not by the node's own thread.
    pool = {child.pid for child in psutil.Process(worker.pid).children()}
    assert holders and holders <= pool, (holders, pool)


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
