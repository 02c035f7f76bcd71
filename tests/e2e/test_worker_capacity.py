"""The worker built for waiting, through the whole stack: many jobs in flight in one
node (WORKER_PROCESSES processes forked from one warm image, then supervised by a small
process in its place), each call with its owner's
token; a deadline that holds while the upstream hangs; SIGTERM, Ctrl-C and a hang-up
drain and hand back what is left; SIGQUIT or Ctrl-C again hands it back at once.
"""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from cli.supervisor import WORKER_READY, start, wait_for_line
from emulator.accounts import account_name
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
    threads_not_blocking,
    wait_until_running,
)
from tests.support.stacks import api_client, own_stack
from tests.support.stacks import submit_small as submit

TOKENS = [f"inflight-{i}-token" for i in range(5)]
SLOTS = 16
DEADLINE_S = 20
# The grace of the nodes the Ctrl-C test starts: a hand-back at once comes well before it.
GRACE_S = 4


@pytest.fixture(scope="module")
def wide_stack(services, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("wide")
    with own_stack(
        services,
        scratch,
        tokens=TOKENS,
        worker_args=("--concurrency", str(SLOTS), "-n", "wide-1@%h"),
        EMULATOR_LATENCY_S="0.5",
        EMULATOR_MODEL="trivial",
        RUNNING_TIMEOUT_S=str(DEADLINE_S),
        # Long enough that only the job's deadline can end a hung call.
        UPSTREAM_CALL_TIMEOUT_S="120",
        WORKER_DRAIN_S="2",
        # The suite's stacks refetch the upstream's settings on every use (TTL 0), so
        # tests that change the emulator's limits see them at once; none here does.
        # The default TTL lets the first test see what a node's warm-up caches.
        UPSTREAM_SETTINGS_TTL_S="3600",
        # A node of two processes (the default, unless the machine lends one core): the
        # slots are shared between them, and every test below holds for the node as a whole.
        WORKER_PROCESSES="2",
    ) as stack:
        stack.scratch = scratch
        yield stack


@pytest.fixture
def client(wide_stack, request):
    with api_client(wide_stack, request) as api:
        yield api


def test_one_node_holds_many_jobs_in_flight_each_call_with_its_owners_token(client, wide_stack):
    users = {token: register(client, token) for token in TOKENS}
    # About 8 s a job (a second per upstream call): all are submitted well before
    # the first ends, however busy the machine.
    emulator(wide_stack, latency_s=1.0)
    calls_before = len(httpx.get(f"{wide_stack.emulator_url}/_emulator/calls").json())
    submissions = [(token, headers) for token, headers in users.items() for _ in range(3)]
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda s: submit(client, s[1]), submissions))

    peak = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        rows = wide_stack.sql(
            "select status, worker from jobs where id = any(cast(:ids as uuid[]))", ids=ids
        )
        running = [r for r in rows if r.status == "running"]
        peak = max(peak, len(running))
        if all(r.status == "succeeded" for r in rows):
            break
        time.sleep(0.1)
    emulator(wide_stack, latency_s=0.5)
    jobs = [wait_for_job(client, h, j) for (_, h), j in zip(submissions, ids, strict=True)]
    assert [j["status"] for j in jobs] == ["succeeded"] * len(ids)
    # 15 jobs of about 2 s each on one node: far more at once than its 2 cores.
    assert peak >= 12, f"only {peak} jobs were in flight at once"
    # Ready means warm: tabpfn-client and the connections were set up before any job.
    [worker] = [p for p in wide_stack.processes if p.name == "worker"]
    log = worker.log()
    assert log.index("worker warmed up in") < log.index(WORKER_READY) < log.index(": claimed")
    # And what it built to start is out of the collector's walks (worker/lifecycle.py).
    frozen = [int(n) for n in re.findall(r"ready; (\d+) objects left out of garbage", log)]
    assert frozen and min(frozen) > 100_000, frozen
    claimed_by = holders(wide_stack, ids)
    # The node's own processes ran them all: its two, forked from its parent.
    processes = {p.pid for p in psutil.Process(worker.pid).children()}
    assert len(processes) == 2 and claimed_by <= processes, (claimed_by, processes)
    # Each takes its stop signals on one thread of its own, one at a time: none of its
    # threads (the job slots, numpy's, Celery's) may take one in Celery's handlers.
    stop_signals = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP}
    for pid in processes:
        assert threads_not_blocking(pid, stop_signals) == [], pid

    calls = httpx.get(f"{wide_stack.emulator_url}/_emulator/calls").json()[calls_before:]
    # Ready means warm, tabpfn-client's cache of the upstream's settings included:
    # the node fetched them during warm-up, and not one job of this first wave asked
    # again (before, each made that extra round trip: a second each at this latency).
    asked = [c for c in calls if c["path"] == "/tabpfn/get_settings"]
    assert asked == [], f"{len(asked)} job(s) fetched the upstream's settings themselves"
    accounts = {account_name(token) for token in TOKENS}
    for token in TOKENS:
        mine = [c["path"] for c in calls if c["account"] == account_name(token)]
        assert mine.count("/tabpfn/fit") == 3 and mine.count("/tabpfn/predict") == 3, mine
    for call in calls:
        if call["path"].startswith("/tabpfn/") and call["method"] == "POST":
            assert call["account"] in accounts, call
        if call["method"] == "PUT":  # an upload's signed URL is its own credential
            assert call["auth_account"] in (None, call["account"]), call


def test_a_hung_upstream_call_ends_at_the_jobs_deadline(client, wide_stack):
    headers = register(client, TOKENS[0])
    assert_a_hung_call_ends_at_the_deadline(client, wide_stack, headers, DEADLINE_S)
    # The slot is not lost: the next job runs as usual.
    assert wait_for_job(client, headers, submit(client, headers))["status"] == "succeeded"


def test_sigterm_drains_then_hands_back_what_is_left(client, wide_stack):
    headers = register(client, TOKENS[1])
    [worker] = [p for p in wide_stack.processes if p.name == "worker"]
    job_id = assert_a_drain_hands_back_the_hung_job(client, wide_stack, headers, worker)
    start_node(wide_stack, "worker-2", ["--concurrency", "4"])
    job = wait_for_job(client, headers, job_id, timeout=60)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), job
    assert "handed 1 unfinished job(s) back to the queue" in worker.log()


def _the_only_node(stack, name: str, processes: int, *, prefix: tuple[str, ...] = ()):
    """A node of `processes` processes, ready, and the only one of the stack running:
    the next job is its own. Its grace is GRACE_S; `prefix` runs it (`nohup`)."""
    for process in stack.processes:
        if process.name.startswith(("worker", "only-")) and process.alive():
            process.stop()
    env = {"WORKER_PROCESSES": str(processes), "WORKER_DRAIN_S": str(GRACE_S)}
    # A node inherits an ignored SIGHUP and keeps it ignored, as nohup asks: a suite
    # run under nohup would start nodes deaf to the hang-up the tests send. Started
    # with the default disposition, as from a terminal, unless `prefix` says otherwise.
    hup = signal.signal(signal.SIGHUP, signal.SIG_DFL) if not prefix else None
    try:
        return start_node(stack, name, ["--concurrency", "2"], env=env, prefix=prefix)
    finally:
        if hup is not None:
            signal.signal(signal.SIGHUP, hup)


# Ctrl-C in a terminal, and its hang-up (SIGHUP) when it closes, reach every process
# of the node (its foreground process group), and the supervisor passes them on too.
# SIGQUIT is Celery's cold shutdown, which kills the processes that run tasks: the
# threads pool cannot, and before worker/lifecycle.py's listen_for_stop_signals the
# process hung until its jobs' deadlines failed them; Ctrl-C to the group was taken
# as a second press, and the process left its job `running`, an attempt spent; a
# hang-up ended the supervisor, and with it every process mid-job.
@pytest.mark.parametrize(
    "processes, sig, presses, at_once",
    [
        (2, signal.SIGINT, 1, False),  # Ctrl-C: drains as SIGTERM does
        (2, signal.SIGINT, 2, True),  # Ctrl-C again: the jobs back at once
        (2, signal.SIGQUIT, 1, True),
        (1, signal.SIGINT, 2, True),  # a node of one process: Celery's own, no supervisor
        (2, signal.SIGHUP, 1, False),  # a closed terminal: drains as SIGTERM does
        # SIGTERM, again and again, to every process: one drain. In Celery's handler a
        # second SIGTERM, run inside the first, deadlocked the process (_warm_shutdown).
        (2, signal.SIGTERM, 200, False),
    ],
    ids=["ctrl-c", "ctrl-c-twice", "sigquit", "one-process-ctrl-c-twice", "hang-up", "sigterms"],
)
def test_ctrl_c_and_a_hang_up_drain_and_a_cold_shutdown_hands_the_jobs_back_at_once(
    client, wide_stack, processes, sig, presses, at_once
):
    headers = register(client, TOKENS[2])
    node = _the_only_node(wide_stack, f"only-{sig.name.lower()}-{presses}-{processes}", processes)
    # As a terminal's signal reaches them (and systemd's, by default): every process
    # at once, so the supervisor's copy comes after each process's own.
    group = [*(p.pid for p in psutil.Process(node.pid).children()), node.pid]

    def press() -> None:
        for _ in range(presses):
            for pid in group:
                os.kill(pid, sig)
            time.sleep(0.3 if presses <= 2 else 0)

    job_id = assert_a_drain_hands_back_the_hung_job(
        client, wide_stack, headers, node, stop=press, grace_s=GRACE_S, at_once=at_once
    )
    assert "drain: handed 1 unfinished job(s) back to the queue" in node.log()
    # Said by listen_for_stop_signals, not by Celery's own cold shutdown ("Waiting
    # gracefully for cold shutdown to complete..."), which the test would not tell apart.
    assert ("the jobs in flight go back to the queue now" in node.log()) is at_once
    # That a job handed back runs again at attempt 1 is shown by the SIGTERM test above
    # (the same hand-back); this one is canceled, so the next case's node starts idle.
    canceled = client.post(f"/jobs/{job_id}/cancel", headers=headers)
    assert canceled.json()["status"] == "canceled", canceled.text


def test_a_remote_shutdown_drains_as_sigterm_does(client, wide_stack):
    """Flower's "Shut Down" (Celery's remote `shutdown`, as `celery control shutdown`
    sends it) stopped the pool without a drain: its slots went on claiming queued jobs
    as each ended, and a hung job held the process until long past its deadline."""
    headers = register(client, TOKENS[4])
    node = _the_only_node(wide_stack, "only-remote", 1)
    send_shutdown = remote_shutdown(wide_stack, node.pid)
    queued_after: list[str] = []

    def shut_down() -> None:
        send_shutdown()
        time.sleep(0.5)
        # A slot is free (2, one hung): draining, the node claims no more.
        queued_after.append(submit(client, headers))

    job_id = assert_a_drain_hands_back_the_hung_job(
        client, wide_stack, headers, node, stop=shut_down, grace_s=GRACE_S
    )
    assert "drain: handed 1 unfinished job(s) back to the queue" in node.log()
    later = client.get(f"/jobs/{queued_after[0]}", headers=headers).json()
    assert (later["status"], later["attempts"]) == ("queued", 0), later
    for job in (job_id, *queued_after):
        canceled = client.post(f"/jobs/{job}/cancel", headers=headers)
        assert canceled.json()["status"] == "canceled", canceled.text


def test_a_remote_shutdown_of_one_process_drains_it_and_the_node_serves_on(client, wide_stack):
    """Flower lists each process of a node as a worker of its own: its "Shut Down"
    stops that one. It drains and exits 0, Celery's own stop, which the node's
    supervisor does not undo; the node's other process runs the job handed back."""
    headers = register(client, TOKENS[4])
    node = _the_only_node(wide_stack, "only-remote-one", 2)
    with hung_upstream(wide_stack):
        job_id = submit(client, headers)
        wait_until_running(client, headers, job_id)
        [row] = wide_stack.sql("select worker from jobs where id = :id", id=job_id)
        holder = psutil.Process(holder_pid(row.worker))
        other = [p for p in psutil.Process(node.pid).children() if p.pid != holder.pid]
        send_shutdown = remote_shutdown(wide_stack, holder.pid)
        stopped = time.monotonic()
        send_shutdown()
        holder.wait(GRACE_S + 18)  # not our child: its exit code is the node's log's, below
        assert GRACE_S <= time.monotonic() - stopped < GRACE_S + 8
    # Handed back, the attempt not counted; the node's other process claimed it again.
    job = wait_for_job(client, headers, job_id, timeout=60)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), job
    assert "drain: handed 1 unfinished job(s) back to the queue" in node.log()
    assert holders(wide_stack, [job_id]) == {other[0].pid}
    assert node.alive() and psutil.Process(node.pid).children() == other
    # "exited": code 0, which the supervisor leaves be ("died (...)" for any other).
    assert re.search(rf"process \d \(pid {holder.pid}\) exited$", node.log(), re.M), node.log()


def test_under_nohup_a_hang_up_is_ignored_and_the_node_runs_on(client, wide_stack):
    """Celery's own SIGHUP restarts a process by exec'ing its command line, which in a
    node's process is the whole node's: a node then ran inside each of them."""
    headers = register(client, TOKENS[3])
    node = _the_only_node(wide_stack, "only-nohup", 2, prefix=("nohup",))
    processes = psutil.Process(node.pid).children()
    emulator(wide_stack, latency_s=1.0)  # about 5 s a job
    try:
        job_id = submit(client, headers)
        wait_until_running(client, headers, job_id)
        for pid in [node.pid, *(p.pid for p in processes)]:
            os.kill(pid, signal.SIGHUP)
        job = wait_for_job(client, headers, job_id, timeout=60)
    finally:
        emulator(wide_stack, latency_s=0.5)
    assert (job["status"], job["attempts"]) == ("succeeded", 1), job
    assert node.alive()
    # The same processes, each still the node's and none a node of its own.
    assert psutil.Process(node.pid).children(recursive=True) == processes
    assert all(p.cmdline() == processes[0].cmdline() for p in processes)
    node.stop()


def test_a_node_killed_hard_takes_its_processes_with_it(wide_stack):
    node = start(
        "node-killed",
        ["worker", "--concurrency", "40", "-n", "killed@%h", "--without-mingle"],
        wide_stack.env,
        wide_stack.scratch / "logs",
    )
    try:
        wait_for_line(node, WORKER_READY)
        assert "2 processes, 20 + 20 job slots" in node.log()
        supervisor = psutil.Process(node.pid)
        processes = supervisor.children()
        assert len(processes) == 2
        # The warm image the processes were forked from is gone: the node's own pid
        # now runs the supervisor, a fraction of a serving process's memory.
        assert "worker.supervisor" in supervisor.cmdline(), supervisor.cmdline()
        smallest = min(p.memory_info().rss for p in processes)
        assert supervisor.memory_info().rss < smallest / 3, (supervisor, processes)
        # Ready means its slots' threads run already (worker.lifecycle.start_threads),
        # 20 slots and 4 test-set decoders each: a first burst does not start them
        # one message at a time. Without it a ready process runs a handful.
        for process in processes:
            assert process.num_threads() >= 20 + 4, process.num_threads()
        os.kill(node.pid, signal.SIGKILL)  # the parent only: no clean-up code runs
        _, alive = psutil.wait_procs(processes, timeout=10)
        assert alive == [], f"outlived their node: {alive}"
    finally:
        node.stop()


def test_a_node_whose_processes_cannot_start_stops_instead_of_restarting_them(wide_stack):
    node = start(
        "node-bad-option",
        ["worker", "--no-such-celery-option"],
        wide_stack.env,
        wide_stack.scratch / "logs",
    )
    try:
        assert node.popen.wait(60) == 2  # Celery's usage error, passed on
    finally:
        node.stop()
    log = node.log()
    assert "No such option" in log
    assert "failed at start-up (exit 2); stopping the node" in log
    assert "starting another" not in log
