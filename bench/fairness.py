"""Issue 14's two scenarios, measured: the noisy neighbour and the burst.

tests/e2e/test_fair_share.py asserts the same behaviour; this section writes the
figures down. Both run on a node of their own (bench/nodes.py) while the main
worker is stopped.

- Noisy neighbour: user A queues 40 fit-predicts on a node with few slots (4,
  fewer than A's backlog, as in issue 14's measurement); user B then submits
  one. B's latency against its idle latency.
- Burst: one token limited to 10 fits and 10 predictions per 5-s window on
  both sides (the emulator enforces it with 429s, the service paces to it);
  user A submits 60 fit-predicts at once. Drain time against the minimum the
  limits allow, the 429s it cost, every job's end, B's latency meanwhile. Run
  twice: the emulator's windows opening at the first request, then on the clock.
"""

from __future__ import annotations

import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from bench import data
from bench.fleet import Context, Emulator, log, stack_latency
from bench.nodes import nodes
from bench.service import ServiceUser
from bench.stack import SECTION_TOKENS

NOISY_SLOTS = 4
NOISY_LATENCY_S = 0.25  # a fit-predict (four delayed calls) takes about a second
WINDOW_S = 5.0
FITS_PER_WINDOW = 10
PREDICTIONS_PER_WINDOW = 10
UPLOADS_PER_WINDOW = 20  # a fit-predict uploads twice: never the binding limit
SCALE = WINDOW_S / 60


def _submit_all(user: ServiceUser, tables: list[data.Table]) -> list[str]:
    def submit(table: data.Table) -> str:
        return user.submit("/jobs/fit-predict", data.fit_predict_body(table))[1]["id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(submit, tables))


def _ends(user: ServiceUser, job_ids: list[str]) -> list[dict]:
    """Each job at its end (failed jobs included: they are counted, not raised)."""
    jobs = []
    for job_id in job_ids:
        while True:
            job = user.http.get(f"/jobs/{job_id}", params={"wait": 30}).json()
            if job["status"] in ("succeeded", "failed", "canceled"):
                jobs.append(job)
                break
    return jobs


def _summary(jobs: list[dict], submitted_wall: float) -> dict:
    finished = max(datetime.fromisoformat(j["finished_at"]).timestamp() for j in jobs)
    return {
        "jobs": len(jobs),
        "succeeded": sum(1 for j in jobs if j["status"] == "succeeded"),
        "failed": [j["error"] for j in jobs if j["status"] != "succeeded"][:5],
        "attempts_not_1": sum(1 for j in jobs if j["attempts"] != 1),
        "drain_s": finished - submitted_wall,
        # When each job started and ended, seconds after the submits began: how the
        # pacing spread the burst over the windows.
        "started_s": sorted(
            _after(j["started_at"], submitted_wall) for j in jobs if j["started_at"]
        ),
        "finished_s": sorted(_after(j["finished_at"], submitted_wall) for j in jobs),
    }


def _after(stamp: str, wall: float) -> float:
    return round(datetime.fromisoformat(stamp).timestamp() - wall, 3)


def _idle(user: ServiceUser, base: int, n: int) -> float:
    return statistics.median(
        user.fit_predict(data.make_table(base + i, **data.SMALL))[0].total_s for i in range(n)
    )


def bench_noisy(ctx: Context, backlog: int) -> dict:
    stack = ctx.stack
    log(f"fairness: noisy neighbour, {backlog} jobs of A on {NOISY_SLOTS} slots, then one of B")
    noisy = ServiceUser.register(stack.api_url, SECTION_TOKENS["noisy"])
    small = ServiceUser.register(stack.api_url, SECTION_TOKENS["small"])
    stack.set_latency(NOISY_LATENCY_S)
    # The default per-user cap (16): above the node's slots, so round-robin decides.
    settings = {"WORKER_CONCURRENCY": str(NOISY_SLOTS), "MAX_RUNNING_PER_USER": "16"}
    try:
        spec = [("noisy", [], settings)]
        with stack.main_worker_stopped(), nodes(spec, stack.env, stack.scratch, stack.logs_dir):
            idle = _idle(small, 500_000, 3)
            tables = [data.make_table(510_000 + i, **data.SMALL) for i in range(backlog)]
            submitted = time.time()
            flood = _submit_all(noisy, tables)
            time.sleep(0.5)  # the backlog is queued and every slot busy
            busy = small.fit_predict(data.make_table(520_000, **data.SMALL))[0].total_s
            backlog_end = _summary(_ends(noisy, flood), submitted)
    finally:
        stack.set_latency(stack_latency(stack))
    return {
        "slots": NOISY_SLOTS,
        "backlog": backlog,
        "latency_s": NOISY_LATENCY_S,
        "b_idle_s": idle,
        "b_busy_s": busy,
        "ratio": busy / idle,
        "a": backlog_end,
    }


def bench_burst(ctx: Context, jobs: int, window_start: str = "first_request") -> dict:
    """`window_start`: where the emulator's fixed windows start ("first_request", as an
    INCR + EXPIRE limiter, or "clock"); the cloud does not say which it does."""
    stack = ctx.stack
    log(
        f"fairness: burst of {jobs} jobs, {FITS_PER_WINDOW} fits per {WINDOW_S:.0f}-s window "
        f"(windows start: {window_start})"
    )
    burst = ServiceUser.register(stack.api_url, SECTION_TOKENS["burst"])
    bystander = ServiceUser.register(stack.api_url, SECTION_TOKENS["bystander"])
    limits = {
        "UPSTREAM_RATE_WINDOW_SCALE": str(SCALE),
        "UPSTREAM_FITS_PER_MINUTE": str(FITS_PER_WINDOW),
        "UPSTREAM_PREDICTIONS_PER_MINUTE": str(PREDICTIONS_PER_WINDOW),
        "UPSTREAM_UPLOADS_PER_MINUTE": str(UPLOADS_PER_WINDOW),
        "MAX_RUNNING_PER_USER": "16",
    }
    stack.configure_emulator(
        rate_limits=True,
        rate_window_scale=SCALE,
        fits_per_minute=FITS_PER_WINDOW,
        predictions_per_minute=PREDICTIONS_PER_WINDOW,
        uploads_per_minute=UPLOADS_PER_WINDOW,
        rate_window_start=window_start,
    )
    try:
        # The worker as deployed (`tabpfn-api worker`: 64 slots), paced to the limits.
        spec = [("burst", [], limits)]
        with stack.main_worker_stopped(), nodes(spec, stack.env, stack.scratch, stack.logs_dir):
            idle = _idle(bystander, 600_000, 3)
            # The burst's first window starts empty: wait out the bystander's.
            time.sleep(WINDOW_S - time.time() % WINDOW_S + 0.05)
            tables = [data.make_table(610_000 + i, **data.SMALL) for i in range(jobs)]
            emulator = Emulator(stack)
            submitted = time.time()
            job_ids = _submit_all(burst, tables)
            time.sleep(1.0)
            during = bystander.fit_predict(data.make_table(620_000, **data.SMALL))[0].total_s
            ended = _summary(_ends(burst, job_ids), submitted)
            spent = emulator.spent(jobs + 1)
    finally:
        stack.configure_emulator(
            rate_limits=False, rate_window_scale=1.0, rate_window_start="first_request"
        )
    windows = math.ceil(jobs / FITS_PER_WINDOW)
    # Fixed windows: the k-th batch of ten may start no earlier than window k opens;
    # the last batch then runs one job's time. The burst starts as a window opens.
    minimum = (windows - 1) * WINDOW_S + idle
    return {
        "jobs": jobs,
        "window_start": window_start,
        "window_s": WINDOW_S,
        "fits_per_window": FITS_PER_WINDOW,
        "predictions_per_window": PREDICTIONS_PER_WINDOW,
        "uploads_per_window": UPLOADS_PER_WINDOW,
        "minimum_drain_s": minimum,
        "burst": ended,
        "drain_ratio": ended["drain_s"] / minimum,
        "http_429": sum(spent["http_429"].values()),
        "http_429_by_kind": spent["http_429"],
        "emulator": spent,
        "b_idle_s": idle,
        "b_during_s": during,
        "b_ratio": during / idle,
    }


def bench_fairness(ctx: Context) -> dict:
    jobs = 30 if ctx.quick else 60
    noisy = bench_noisy(ctx, backlog=40)
    burst = bench_burst(ctx, jobs=jobs)
    time.sleep(2 * WINDOW_S)  # the first burst's windows empty, on both sides
    return {
        "noisy": noisy,
        "burst": burst,
        # The same burst against windows on the clock: a different upstream.
        "burst_clock": bench_burst(ctx, jobs=jobs, window_start="clock"),
    }
