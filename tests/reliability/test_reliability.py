"""Crashes and outages while jobs run: every accepted job still ends exactly once.

Each test breaks one thing for real on the private stack of conftest.py (kill -9
a whole worker node, wipe or restart Redis, restart PostgreSQL, deliver a job
twice, a job that kills every worker it runs on, SIGTERM) and checks witnesses
that must agree: the `jobs` row (status, attempts), exactly one fitted model
stored for the job, and the emulator's log of upstream calls made with the
test's own TabPFN account. Results must equal those of a run that saw no fault
(the stack's reference run).
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.support.node_checks import holder_pid
from tests.support.reliability import CLASSES, FIT_PREDICT, TOKENS, RelStack, User, wait_until

# Every upstream call (bar uploads) stalls this long, so a fit-predict job runs
# for a few seconds (four calls) and a fault reliably lands in the middle of it.
SLOW_S = 1.0
# Never registered: the setup call that fails while PostgreSQL is down.
SPARE_TOKEN = TOKENS[-1]


@pytest.fixture
def api(baseline: RelStack):
    with baseline.client() as client:
        yield client


def assert_succeeded_once(
    rel: RelStack, user: User, job_id: str, attempts: int | tuple[int, ...] | None
) -> dict:
    """The job succeeded, stored exactly one model, and its result is the fault-free one."""
    job = user.wait(job_id)
    assert job["status"] == "succeeded", job
    assert job["error"] is None, job
    if attempts is not None:
        allowed = attempts if isinstance(attempts, tuple) else (attempts,)
        assert job["attempts"] in allowed, job
    row = rel.job_row(job_id)
    assert (row.status, row.attempts) == ("succeeded", job["attempts"])
    models = rel.sql("select id from fitted_models where fit_job_id = :id", id=job_id)
    assert len(models) == 1, f"job {job_id} stored {len(models)} models"
    result = user.result(job_id)
    assert result["model_id"] == str(models[0].id) == str(row.model_id)
    assert result["classes"] == CLASSES
    assert result["predictions"] == rel.reference["predictions"]
    return job


def assert_fit_calls(rel: RelStack, user: User, jobs: list[dict], *, exact: bool) -> None:
    """One upstream fit per run that got that far: exactly one per job when no run died."""
    fits = [c for c in rel.upstream_calls(user.token) if c["status"] == 200]
    if exact:
        assert len(fits) == len(jobs), (fits, jobs)
    else:
        # A run killed mid-job may or may not have reached its fit call.
        assert len(jobs) <= len(fits) <= sum(j["attempts"] for j in jobs), (fits, jobs)


def kill_node_running(rel: RelStack, job_id: str, attempt: int) -> str:
    """kill -9 the worker node that runs the job while run `attempt` is mid-way; its claim."""
    [worker] = rel.live_workers()
    row = rel.wait_running(job_id, attempt)
    assert (row.status, row.attempts) == ("running", attempt), row
    assert holder_pid(row.worker) in node_processes(worker), "one of the node's processes holds it"
    rel.kill_worker(worker)
    return row.worker


def node_processes(worker) -> set[int]:
    """The node's pid and its forked processes (WORKER_PROCESSES, worker/node.py)."""
    return {worker.pid, *(p.pid for p in psutil.Process(worker.pid).children())}


def readyz(rel: RelStack) -> httpx.Response:
    return httpx.get(f"{rel.api_url}/readyz", timeout=15)


def test_a_killed_node_restarted_on_its_host_runs_its_job_again_at_once(baseline: RelStack, api):
    rel = baseline
    user = rel.new_user(api)
    rel.emulator(latency_s=SLOW_S)
    # With the sweeper paused, nothing but the new node's start-up could re-run the
    # job: it sees the claim's process on its own host is dead and queues it again
    # without waiting for the lease to run out.
    with rel.sweeper_paused():
        job_id = user.submit()
        dead = kill_node_running(rel, job_id, attempt=1)
        worker = rel.start_worker()
        job = assert_succeeded_once(rel, user, job_id, attempts=2)
    assert f"the process running attempt 1 ({dead}) died; running it again now" in (
        worker.process.log()
    )
    assert_fit_calls(rel, user, [job], exact=False)


def test_a_killed_process_of_a_node_is_replaced_and_its_job_runs_again_at_once(
    baseline: RelStack, api
):
    """kill -9 one of the node's processes (the OOM killer's way): the node's
    supervisor starts a fresh one, whose start-up queues the dead process's job
    again at once; the node's other process never stops serving."""
    rel = baseline
    user = rel.new_user(api)
    rel.stop_all_workers()
    worker = rel.start_worker(processes=2)
    rel.emulator(latency_s=SLOW_S)
    with rel.sweeper_paused():
        job_id = user.submit()
        row = rel.wait_running(job_id, 1)
        victim = holder_pid(row.worker)
        before = node_processes(worker)
        assert victim in before and victim != worker.pid, (victim, before)
        os.kill(victim, signal.SIGKILL)
        job = assert_succeeded_once(rel, user, job_id, attempts=2)
    assert worker.alive(), "the node lives on"
    after = node_processes(worker)
    assert victim not in after and len(after) == len(before), (before, after)
    log = worker.process.log()
    assert f"died (signal {int(signal.SIGKILL)}); starting another" in log
    assert f"the process running attempt 1 ({row.worker}) died; running it again now" in log
    assert_fit_calls(rel, user, [job], exact=False)


def _running_slow_job(rel: RelStack, api):
    """A new user's job, running on the one live worker, its upstream calls slowed down."""
    user = rel.new_user(api)
    [worker] = rel.live_workers()
    rel.emulator(latency_s=SLOW_S)
    job_id = user.submit()
    rel.wait_running(job_id)
    return user, worker, job_id


def test_killed_worker_node_mid_job_is_recovered_by_the_sweeper(baseline: RelStack, api):
    rel = baseline
    user, worker, job_id = _running_slow_job(rel, api)
    rel.kill_worker(worker)
    assert rel.job_row(job_id).status == "running"

    rel.start_worker()
    job = assert_succeeded_once(rel, user, job_id, attempts=2)
    assert_fit_calls(rel, user, [job], exact=False)


def test_queued_jobs_survive_a_wiped_redis(baseline: RelStack, api):
    rel = baseline
    user = rel.new_user(api)
    rel.stop_all_workers()  # so the jobs stay queued, their messages only in Redis
    job_ids = [user.submit() for _ in range(3)]
    assert [rel.queued_deliveries(job_id) for job_id in job_ids] == [1, 1, 1]
    rel.flush_redis()
    # The jobs' messages are gone (beat may have sent its next tick since the flush).
    assert [rel.queued_deliveries(job_id) for job_id in job_ids] == [0, 0, 0]

    rel.start_worker()
    # The sweeper notices jobs queued for QUEUED_TIMEOUT_S and sends them again.
    jobs = [assert_succeeded_once(rel, user, job_id, attempts=1) for job_id in job_ids]
    assert_fit_calls(rel, user, jobs, exact=True)


def test_redis_restart_with_jobs_queued_and_running(baseline: RelStack, api):
    rel = baseline
    user = rel.new_user(api)
    rel.emulator(latency_s=SLOW_S)
    # One node with two pool processes: two jobs run, the third waits in Redis.
    job_ids = [user.submit() for _ in range(3)]
    rel.wait_running(job_ids[0])

    rel.stop_redis()
    down = readyz(rel)
    assert down.status_code == 503, down.text
    assert down.json()["code"] == "service_unavailable"
    assert down.json()["checks"]["database"] == "ok"
    assert down.json()["checks"]["redis"] != "ok"
    started = time.monotonic()
    # The row commits and the submit is accepted; the sweeper sends it later.
    job_ids.append(user.submit())
    assert time.monotonic() - started < 10, "a submit must not hang on a dead broker"

    rel.start_redis()
    wait_until(lambda: readyz(rel).status_code == 200, 20, "/readyz to answer 200 again")
    jobs = [assert_succeeded_once(rel, user, job_id, attempts=1) for job_id in job_ids]
    assert_fit_calls(rel, user, jobs, exact=True)


def test_postgres_restart_mid_job(baseline: RelStack, api):
    rel = baseline
    user = rel.new_user(api)
    rel.emulator(latency_s=2 * SLOW_S)
    job_id = user.submit()
    rel.wait_running(job_id)

    rel.stop_postgres()
    try:
        # Every answer while the database is down is a clean 503, never a 500.
        answers = [
            api.get(f"/jobs/{job_id}", headers=user.headers),
            api.get("/jobs", headers=user.headers),
            api.post("/jobs/fit-predict", json=FIT_PREDICT, headers=user.headers),
            # A token the emulator accepts, so the request reaches the database.
            api.post("/auth/setup", json={"tabpfn_token": SPARE_TOKEN}),
            readyz(rel),
        ]
        for response in answers:
            assert response.status_code == 503, (response.request.url, response.text)
            assert response.json()["code"] == "service_unavailable", response.text
    finally:
        rel.start_postgres()

    # The API reconnects by itself: no restart of any process.
    wait_until(
        lambda: api.get(f"/jobs/{job_id}", headers=user.headers).status_code == 200,
        20,
        "the API to answer again after PostgreSQL came back",
    )
    assert readyz(rel).status_code == 200
    # The run either rode out the outage (1) or lost its lease and ran again (2).
    job = assert_succeeded_once(rel, user, job_id, attempts=(1, 2))
    assert_fit_calls(rel, user, [job], exact=False)
    assert all(p.popen.poll() is None for p in rel.processes), "no process died"
    assert rel.live_workers(), "the worker survived the outage"


def test_a_job_delivered_twice_runs_once(baseline: RelStack, api):
    rel = baseline
    user = rel.new_user(api)
    rel.stop_all_workers()  # so all deliveries wait together and arrive at once
    job_id = user.submit()
    for _ in range(2):
        rel.deliver(job_id)
    assert rel.queued_deliveries(job_id) == 3  # the API's and our two

    # Two slots take two deliveries at once: the claim lets one of them run.
    rel.start_worker(concurrency=2)
    job = assert_succeeded_once(rel, user, job_id, attempts=1)
    wait_until(
        lambda: rel.queued_deliveries(job_id) == 0 and rel.unacked_deliveries(job_id) == 0,
        10,
        "every delivery to be taken, run and acknowledged",
    )
    assert_fit_calls(rel, user, [job], exact=True)
    assert rel.job_row(job_id).attempts == 1, "a refused delivery leaves no trace"


def test_two_nodes_share_the_queue_and_run_each_job_once(baseline: RelStack, api):
    """Scale-out: two nodes (their own names) on one Redis and one PostgreSQL both take
    jobs, at once, and no job runs twice: one claim, one upstream fit, one model each."""
    rel = baseline
    user = rel.new_user(api)
    rel.emulator(latency_s=0.3)  # a job takes ~1.2 s: the two nodes' slots fill together
    rel.stop_all_workers()
    first, second = rel.start_worker(concurrency=3), rel.start_worker(concurrency=3)
    try:
        job_ids = [user.submit() for _ in range(12)]
        running_at_once = 0

        def all_ended() -> bool:
            nonlocal running_at_once
            rows = rel.sql(
                "select status from jobs where id = any(cast(:ids as uuid[]))", ids=job_ids
            )
            running_at_once = max(running_at_once, sum(r.status == "running" for r in rows))
            return all(r.status in ("succeeded", "failed", "canceled") for r in rows)

        wait_until(all_ended, 60, "the twelve jobs to end", interval=0.05)
        jobs = [assert_succeeded_once(rel, user, job_id, attempts=1) for job_id in job_ids]
        assert_fit_calls(rel, user, jobs, exact=True)
        holders = {
            holder_pid(row.worker)
            for row in rel.sql(
                "select worker from jobs where id = any(cast(:ids as uuid[]))", ids=job_ids
            )
        }
        for node in (first, second):
            assert holders & node_processes(node), f"{node.hostname} ran none of the jobs"
        # More than one node's three slots held jobs at the same moment.
        assert running_at_once > 3, running_at_once
    finally:
        rel.stop_worker(second)  # the other tests expect one node


def test_a_poison_job_fails_with_worker_lost_and_others_still_succeed(baseline: RelStack, api):
    rel = baseline
    victim = rel.new_user(api)
    bystander = rel.new_user(api)
    rel.emulator(latency_s=SLOW_S)
    # A node of one slot: a crash takes every job the node holds in flight (the
    # threads model's blast radius, docs/reliability.md), so the bystanders wait
    # in the queue while the poison job runs.
    rel.stop_all_workers()
    rel.start_worker(concurrency=1)
    poison_id = victim.submit()
    other_ids = [bystander.submit() for _ in range(2)]

    for attempt in (1, 2, 3):
        kill_node_running(rel, poison_id, attempt)
        rel.start_worker(concurrency=1)

    poison = victim.wait(poison_id)
    assert poison["status"] == "failed", poison
    assert poison["error"]["code"] == "worker_lost", poison
    assert poison["attempts"] == 3
    assert rel.sql("select id from fitted_models where fit_job_id = :id", id=poison_id) == []
    result = api.get(f"/jobs/{poison_id}/result", headers=victim.headers)
    assert result.status_code == 409, result.text

    others = [assert_succeeded_once(rel, bystander, job_id, attempts=1) for job_id in other_ids]
    assert_fit_calls(rel, bystander, others, exact=True)


def test_sigterm_lets_the_running_job_finish(baseline: RelStack, api):
    rel = baseline
    user, worker, job_id = _running_slow_job(rel, api)
    worker.process.popen.send_signal(signal.SIGTERM)  # what `docker stop` sends

    job = assert_succeeded_once(rel, user, job_id, attempts=1)
    assert_fit_calls(rel, user, [job], exact=True)
    assert worker.process.popen.wait(30) == 0, "warm shutdown ends cleanly"


def test_a_database_statement_cut_mid_job_does_not_fail_the_job(baseline: RelStack, api):
    """A statement cut off by the database (failover, restart, a killed backend) is
    a transient fault like a broken upstream connection: the job must run again.

    Deterministic: a transaction of ours holds the job's row, so the worker's update
    that stores the outcome waits inside PostgreSQL; we terminate that backend and
    let go.
    """
    rel = baseline
    user = rel.new_user(api)
    # Half a second per upstream call: the predict (two calls) is all that runs while
    # the row is held, so heartbeats wait ~1 s, well under LEASE_TIMEOUT_S.
    rel.emulator(latency_s=0.5)
    job_id = user.submit()
    wait_until(
        lambda: rel.job_row(job_id).stage == "predicting", 30, "the job's predict", interval=0.02
    )

    def worker_updates_waiting(status: str) -> list:
        # psycopg2 sends parameters inline: the worker's final update names its status
        # (inside a WITH: the same statement stores the result).
        return rel.sql(
            "select pid from pg_stat_activity where wait_event_type = 'Lock' and query ~* :sets",
            sets=rf"update jobs set status\s*=\s*'{status}'",
        )

    engine = create_engine(rel.database_url, poolclass=NullPool)
    try:
        with engine.connect() as lock:
            # Hold the job's row so the worker's final update waits mid-statement...
            transaction = lock.begin()
            lock.execute(text("select 1 from jobs where id = :id for update"), {"id": job_id})
            [stuck] = wait_until(
                lambda: worker_updates_waiting("succeeded"),
                15,
                "the worker's final update",
            )
            # ...and cut it off there, as a failover or restart would. The lock is
            # held for well under LEASE_TIMEOUT_S: the run keeps its claim.
            rel.sql("select pg_terminate_backend(:pid)", pid=stuck.pid)
            transaction.rollback()
    finally:
        engine.dispose()

    job = assert_succeeded_once(rel, user, job_id, attempts=(2, 3))
    assert_fit_calls(rel, user, [job], exact=False)
