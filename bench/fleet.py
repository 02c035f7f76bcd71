"""Sections of issue 13 about worker nodes: in flight, cold start, scale-out.

Each starts its own node(s) with the real `tabpfn-api worker` command while
the main worker is stopped (bench/nodes.py), against the same emulator, API
and database as the rest of the run, and reads the emulator's own CPU
(`GET /_emulator/stats`) before and after each side, so every ratio sits next
to what the stand-in upstream cost the machine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import create_engine, text

from bench import data
from bench.memory import cpu_seconds, cpu_spent, minor_faults
from bench.nodes import Sampler, connections, nodes, tree, tree_pss_kb, tree_rss_kb
from bench.service import ServiceUser
from bench.stack import ROOT_DIR, SECTION_TOKENS, BenchStack


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Context:
    """What the sections need from the run: the stack, and a direct client per token."""

    stack: BenchStack
    direct: Callable[[str], object]  # token -> a DirectProcess (bench/__main__.py)
    quick: bool


class Emulator:
    """The emulator's CPU and call counts over one side of a section."""

    def __init__(self, stack: BenchStack) -> None:
        self.stack = stack
        self.before = stack.emulator_stats()

    def spent(self, jobs: int) -> dict:
        after = self.stack.emulator_stats()
        calls = {
            kind: after["calls"].get(kind, 0) - self.before["calls"].get(kind, 0)
            for kind in after["calls"]
        }
        throttled = {
            kind: after["http_429"].get(kind, 0) - self.before["http_429"].get(kind, 0)
            for kind in after["http_429"]
        }
        cpu = after["cpu_s"] - self.before["cpu_s"]
        return {
            "cpu_s": cpu,
            "cpu_ms_per_job": 1000 * cpu / max(jobs, 1),
            "calls": {k: v for k, v in calls.items() if v},
            "http_429": {k: v for k, v in throttled.items() if v},
            "model": after.get("model"),
        }


def database_engine(stack: BenchStack):
    return create_engine(stack.env["DATABASE_URL"], pool_size=2)


def _running_jobs(engine) -> Callable[[], float]:
    def probe() -> float:
        with engine.connect() as connection:
            return connection.execute(
                text("SELECT count(*) FROM jobs WHERE status = 'running'")
            ).scalar_one()

    return probe


def _tables(base: int, n: int) -> list[data.Table]:
    return [data.make_table(base + i, **data.SMALL) for i in range(n)]


def _seeds(base: int, n: int) -> list[int]:
    return list(range(base, base + n))


def _latency(timings) -> dict:
    values = sorted(t.total_s for t in timings)
    return {
        "median": statistics.median(values),
        "max": values[-1],
        "mean": statistics.mean(values),
        # Where the time went (server-side timestamps): waiting for a slot vs running.
        **{
            f"{part}_median": statistics.median(getattr(t, f"{part}_s") for t in timings)
            for part in ("submit", "queue", "run", "notify")
        },
    }


# --- in flight -----------------------------------------------------------------


def bench_inflight(ctx: Context, sizes: tuple[int, ...], jobs_per_client: int) -> dict:
    """N clients at 1 s per upstream call: the default worker node vs N direct threads.

    Then the largest size once more on a node of one process (WORKER_PROCESSES=1,
    the same slots), against its own direct run: the evidence for the default of two.
    """
    stack = ctx.stack
    log(f"inflight: {sizes} clients x {jobs_per_client} fit-predicts at 1 s per upstream call")
    user = ServiceUser.register(stack.api_url, SECTION_TOKENS["inflight"])
    direct = ctx.direct(SECTION_TOKENS["inflight-direct"])
    engine = database_engine(stack)
    out: dict = {"jobs_per_client": jobs_per_client, "latency_s": 1.0, "sizes": {}}
    stack.set_latency(1.0)
    try:
        with stack.main_worker_stopped():
            spec = [("inflight", [], {})]
            with nodes(spec, stack.env, stack.scratch, stack.logs_dir) as (node,):
                pid = node.popen.pid
                out["idle_rss_mb"] = tree_rss_kb(pid) / 1024
                out["idle_pss_mb"] = tree_pss_kb(pid) / 1024
                out["processes"] = len(tree(pid))
                for k, n in enumerate(sizes):
                    base = 200_000 + k * 10_000
                    out["sizes"][str(n)] = inflight_pair(
                        stack, user, direct, engine, pid, n, n * jobs_per_client, base
                    )
                out["worker_settings"] = node_settings(node.log())
            n = sizes[-1]
            spec = [("inflight-1p", [], {"WORKER_PROCESSES": "1"})]
            with nodes(spec, stack.env, stack.scratch, stack.logs_dir) as (node,):
                log(f"inflight: {n} clients again, on a node of 1 process")
                pair = inflight_pair(
                    stack, user, direct, engine, node.popen.pid, n, n * jobs_per_client, 250_000
                )
                out["one_process"] = {"clients": n, "processes": len(tree(node.popen.pid))}
                out["one_process"] |= pair
    finally:
        stack.set_latency(stack_latency(stack))
        engine.dispose()
    return out


def inflight_pair(
    stack, user, direct, engine, pid: int, n: int, jobs: int, base: int, rounds: int = 3
) -> dict:
    """`jobs` fit-predicts from `n` direct threads, then from `n` service clients; `rounds` times.

    The sides alternate, direct first, and each side's rate is its jobs over its
    seconds summed across the rounds. This machine's speed drifts by more than the
    margin under test within a minute (a fixed loop of Python took 270-500 ms in
    one idle minute), so one pair of runs can land each side in a different phase;
    alternating spreads the drift over both sides. Three rounds, not two: the
    ratio at 64 clients gave 0.62-0.82 over four two-round runs of the same code.
    """
    direct_rounds, service_rounds = [], []
    for k in range(rounds):
        seeds = _seeds(base + k * jobs, jobs)
        direct_rounds.append(_direct_round(stack, direct, pid, n, seeds))
        service_rounds.append(_service_round(stack, user, engine, direct, pid, n, seeds))
    direct_side = _pooled(direct_rounds, jobs)
    direct_side["retries"] = sum(r["retries"] for r in direct_rounds)
    direct_side["stalled"] = sum(r.get("stalled", 0) for r in direct_rounds)
    direct_side["latency_median"] = statistics.median(
        x for r in direct_rounds for x in r["latencies"]
    )
    service_side = _pooled(service_rounds, jobs)
    service_side["retried"] = sum(r["retried"] for r in service_rounds)
    timings = [t for r in service_rounds for t in r["timings"]]
    service_side["latency"] = _latency(timings)
    service_side["latency_median"] = service_side["latency"]["median"]
    fullest = max(service_rounds, key=lambda r: r["sampler"].peak["running"])
    peak = {k: max(r["sampler"].peak[k] for r in service_rounds) for k in ("rss_kb", "pss_kb")}
    service_side |= {
        "peak_rss_mb": peak["rss_kb"] / 1024,
        "peak_pss_mb": peak["pss_kb"] / 1024,
        "peak_running": fullest["sampler"].peak["running"],
        "connections_at_peak": fullest["sampler"].at_peak,
    }
    return {
        "jobs": jobs * rounds,
        "rounds": rounds,
        "service": service_side,
        "direct": direct_side,
        "ratio": service_side["jobs_per_s"] / direct_side["jobs_per_s"],
    }


def _cpu(stack, node: int, direct) -> dict[str, dict[int, float]]:
    return stack.cpu_by_part({"worker node": tree(node)}, direct.pid)


def _direct_round(stack, direct, node: int, n: int, seeds: list[int]) -> dict:
    log(f"inflight: {n} direct threads, {len(seeds)} jobs")
    emulator, cpu = Emulator(stack), _cpu(stack, node, direct)
    answer = direct.ask(op="throughput", seeds=seeds, shape=data.SMALL, threads=n)
    return {
        "seconds": answer["seconds"],
        "latencies": answer["latencies"],
        "retries": answer.get("retries", 0),
        "stalled": answer.get("stalled", 0),
        "emulator": emulator.spent(len(seeds)),
        "cpu_s": cpu_spent(cpu, _cpu(stack, node, direct)),
    }


def _service_round(stack, user, engine, direct, pid: int, n: int, seeds: list[int]) -> dict:
    log(f"inflight: {n} service clients, {len(seeds)} jobs")
    tables = [data.make_table(seed, **data.SMALL) for seed in seeds]
    emulator, cpu = Emulator(stack), _cpu(stack, pid, direct)
    sampler = Sampler(
        {
            "rss_kb": lambda: tree_rss_kb(pid),
            "pss_kb": lambda: tree_pss_kb(pid),
            "running": _running_jobs(engine),
        },
        at_peak_of="running",
        snapshot=lambda: connections(pid, stack.env["DATABASE_URL"], stack.env["REDIS_URL"]),
        # PSS walks the node's whole memory map (smaps_rollup): ~6 ms of CPU per
        # 250 MB read, holding the node's map lock meanwhile. Every 200 ms that was
        # ~1 s of CPU per service round, and the direct rounds have no sampler.
        sparse={"pss_kb": 10},
    )
    with sampler:
        seconds, timings = user.throughput(tables, clients=n)
    spent = cpu_spent(cpu, _cpu(stack, pid, direct))
    user.add_server_times(timings)
    return {
        "seconds": seconds,
        "timings": timings,
        # Jobs run again after a transient fault (the direct side's "retries").
        "retried": _no_job_ran_twice(engine, [t.job_id for t in timings])["attempts_not_1"],
        "sampler": sampler,
        "emulator": emulator.spent(len(seeds)),
        "cpu_s": spent,
    }


def _pooled(rounds: list[dict], jobs: int) -> dict:
    """One side's rounds as one rate: all its jobs over all its seconds."""
    seconds = sum(r["seconds"] for r in rounds)
    # CPU ms per job by process, and the cores they kept busy on average.
    by_process = {
        part: 1000 * sum(r["cpu_s"][part] for r in rounds) / (jobs * len(rounds))
        for part in rounds[0]["cpu_s"]
    }
    cores = sum(sum(r["cpu_s"].values()) for r in rounds) / seconds
    cpu_s = sum(r["emulator"]["cpu_s"] for r in rounds)
    calls: dict[str, int] = {}
    for r in rounds:
        for kind, count in r["emulator"]["calls"].items():
            calls[kind] = calls.get(kind, 0) + count
    emulator = dict(rounds[-1]["emulator"])
    emulator |= {
        "cpu_s": cpu_s,
        "cpu_ms_per_job": 1000 * cpu_s / (jobs * len(rounds)),
        "cpu_ms_per_job_rounds": [r["emulator"]["cpu_ms_per_job"] for r in rounds],
        "calls": calls,
    }
    return {
        "seconds": seconds,
        "cpu_ms_per_job": by_process,
        "cores_busy": cores,
        "jobs_per_s": jobs * len(rounds) / seconds,
        "jobs_per_s_rounds": [jobs / r["seconds"] for r in rounds],
        "emulator": emulator,
    }


def stack_latency(stack: BenchStack) -> float:
    return float(stack.env["EMULATOR_LATENCY_S"])


def node_settings(log_text: str) -> dict:
    """Celery's banner: the pool and concurrency the node actually ran with."""
    found = {}
    for line in log_text.splitlines():
        if "concurrency:" in line:
            found["concurrency"] = line.split("concurrency:", 1)[1].strip()
    return found


# --- cold start ----------------------------------------------------------------


def bench_coldstart(ctx: Context, n: int, trials: int) -> dict:
    """A fresh node's first N jobs (submitted the moment it is ready) vs N more after, twice;
    `trials` times, each on a node of its own (one trial's rounds swing with the machine)."""
    stack = ctx.stack
    log(f"coldstart: {trials} fresh worker node(s), {n} jobs at once as soon as each is ready")
    user = ServiceUser.register(stack.api_url, SECTION_TOKENS["coldstart"])
    # The API's key-verification cache warm for this user (bcrypt once): the
    # section measures the worker node's cold start, not the API's.
    user.http.get("/auth/me").raise_for_status()
    out: dict = {"jobs": n, "latency_s": stack_latency(stack), "trials": []}
    with stack.main_worker_stopped():
        for trial in range(trials):
            out["trials"].append(_cold_trial(stack, user, n, seed=300_000 + 5_000 * trial))
    log("coldstart: a direct tabpfn-client in a fresh process")
    seeds = [str(390_000 + i) for i in range(4)]
    spawned = time.perf_counter()
    answer = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.direct",
            "--cold",
            stack.emulator_url,
            SECTION_TOKENS["coldstart-direct"],
            json.dumps(data.SMALL),
            *seeds,
        ],
        cwd=ROOT_DIR,
        env={**stack.env, "TABPFN_CLIENT_API_URL": stack.emulator_url},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    process_s = time.perf_counter() - spawned
    cold = json.loads(answer.stdout.strip().splitlines()[-1])
    out["direct"] = {
        "process_s": process_s,  # spawn until the last call ended
        "import_s": cold["import_s"],
        "first_call_s": cold["calls_s"][0],
        "later_calls_mean_s": statistics.mean(cold["calls_s"][1:]),
    }
    return out


def _cold_trial(stack: BenchStack, user: ServiceUser, n: int, seed: int) -> dict:
    spawned = time.perf_counter()
    with nodes([("coldstart", [], {})], stack.env, stack.scratch, stack.logs_dir) as started:
        trial: dict = {"ready_s": time.perf_counter() - spawned, "rounds": {}}
        pids = tree(started[0].popen.pid)
        for k, name in enumerate(("cold", "warm", "warm again")):
            emulator = Emulator(stack)
            # The node's CPU and page faults per round: what a cold round pays beyond
            # a warm one (lazy set-up, copy-on-write of pages shared across the fork).
            cpu_before = sum(cpu_seconds(p) for p in pids)
            faults_before = sum(minor_faults(p) for p in pids)
            seconds, timings = user.throughput(_tables(seed + 1000 * k, n), clients=n)
            node_cpu_ms = (sum(cpu_seconds(p) for p in pids) - cpu_before) * 1000 / n
            node_faults = (sum(minor_faults(p) for p in pids) - faults_before) / n
            user.add_server_times(timings)
            trial["rounds"][name] = {
                "seconds": seconds,
                "first_s": min(t.total_s for t in timings),
                "mean_s": statistics.mean(t.total_s for t in timings),
                "max_s": max(t.total_s for t in timings),
                **{
                    f"{part}_mean_s": statistics.mean(getattr(t, f"{part}_s") for t in timings)
                    for part in ("submit", "queue", "run", "notify")
                },
                "emulator": emulator.spent(n),
                "node_cpu_ms_per_job": node_cpu_ms,
                "node_minor_faults_per_job": node_faults,
            }
    return trial


# --- scale-out -----------------------------------------------------------------


def _no_job_ran_twice(engine, job_ids: list[str]) -> dict:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                """
                SELECT j.id::text, j.status, j.attempts, j.worker,
                       (SELECT count(*) FROM fitted_models m WHERE m.fit_job_id = j.id) AS models
                FROM jobs j WHERE j.id = ANY(CAST(:ids AS uuid[]))
                """
            ),
            {"ids": job_ids},
        ).all()
    workers: dict[str, int] = {}
    for row in rows:
        # "<host>:<pid>:…" (this_worker()): both nodes share the host, so the pid tells
        # them apart.
        workers[row.worker or "?"] = workers.get(row.worker or "?", 0) + 1
    return {
        "jobs": len(rows),
        "succeeded": sum(1 for r in rows if r.status == "succeeded"),
        "attempts_not_1": sum(1 for r in rows if r.attempts != 1),
        "models_not_1": sum(1 for r in rows if r.models != 1),
        "by_worker_process": workers,
    }


def bench_scaleout(ctx: Context, clients: int, jobs_per_client: int, concurrency: int) -> dict:
    """One node vs two (`-n bench-w1@%h`, `-n bench-w2@%h`), each WORKER_CONCURRENCY=N."""
    stack = ctx.stack
    log(f"scaleout: {clients} clients at 1 s per call, nodes of {concurrency} slots")
    user = ServiceUser.register(stack.api_url, SECTION_TOKENS["scaleout"])
    engine = database_engine(stack)
    settings = {"WORKER_CONCURRENCY": str(concurrency)}
    specs = {
        "one node": [("bench-w1", ["-n", "bench-w1@%h"], settings)],
        "two nodes": [
            ("bench-w1", ["-n", "bench-w1@%h"], settings),
            ("bench-w2", ["-n", "bench-w2@%h"], settings),
        ],
    }
    out: dict = {
        "clients": clients,
        "jobs": clients * jobs_per_client,
        "concurrency": concurrency,
        "latency_s": 1.0,
        "runs": {},
    }
    stack.set_latency(1.0)
    try:
        with stack.main_worker_stopped():
            for k, (name, spec) in enumerate(specs.items()):
                with nodes(spec, stack.env, stack.scratch, stack.logs_dir) as started:
                    jobs = clients * jobs_per_client
                    pids = [node.popen.pid for node in started]
                    emulator = Emulator(stack)
                    sampler = Sampler(
                        {
                            "running": _running_jobs(engine),
                            "rss_kb": lambda pids=pids: sum(tree_rss_kb(p) for p in pids),
                        }
                    )
                    log(f"scaleout: {name}, {jobs} jobs")
                    with sampler:
                        seconds, timings = user.throughput(
                            _tables(400_000 + 10_000 * k, jobs), clients=clients
                        )
                    spent = emulator.spent(jobs)
                    user.add_server_times(timings)
                    checks = _no_job_ran_twice(engine, [t.job_id for t in timings])
                    checks["emulator_fits"] = spent["calls"].get("fit", 0)
                    out["runs"][name] = {
                        "seconds": seconds,
                        "jobs_per_s": jobs / seconds,
                        "peak_running": sampler.peak["running"],
                        "peak_rss_mb": sampler.peak["rss_kb"] / 1024,
                        "latency_median": _latency(timings)["median"],
                        "emulator": spent,
                        "checks": checks,
                    }
    finally:
        stack.set_latency(stack_latency(stack))
        engine.dispose()
    runs = out["runs"]
    out["speedup"] = runs["two nodes"]["jobs_per_s"] / runs["one node"]["jobs_per_s"]
    return out
