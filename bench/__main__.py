"""`python -m bench`: run every benchmark against a fresh stack and write docs/benchmarks.md.

python -m bench                 # the whole run (make bench)
python -m bench --quick         # fewer repetitions, no large-data case: a smoke run
python -m bench --only latency  # some sections only; prints their figures, keeps the docs
python -m bench --only submitload,uploads --quick  # issue 15's sections, each on its own stack
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from bench import data, floor, machine_speed, profiling
from bench.data import SMALL
from bench.first_job import bench_first_job
from bench.fleet import log
from bench.memory import (
    children,
    cpu_seconds,
    cpu_spent,
    machine_busy_seconds,
    main_thread_cpu_seconds,
    memory_kb,
    pids_named,
    reset_peak_memory,
)
from bench.report import machine_facts, render
from bench.sections import (
    FLEET_SECTIONS,
    STANDALONE_SECTIONS,
    fleet_sections,
    standalone_sections,
)
from bench.service import JobTiming, ServiceUser, upload_fields
from bench.stack import DIRECT_TOKEN, SERVICE_TOKEN, BenchStack, Settings, start_stack

ROOT = Path(__file__).resolve().parents[1]


class DirectProcess:
    """The baseline client in a process of its own (see bench/direct.py)."""

    def __init__(
        self, emulator_url: str, env: dict[str, str], stack: ExitStack, token: str = DIRECT_TOKEN
    ) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "bench.direct", emulator_url, token],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**env, "TABPFN_CLIENT_API_URL": emulator_url},
        )
        stack.callback(self.close)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ask(self, **command) -> dict:
        self.popen.stdin.write(json.dumps(command) + "\n")
        self.popen.stdin.flush()
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError("the direct client process died (see its stderr above)")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"direct client: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.stdin.write(json.dumps({"op": "exit"}) + "\n")
            self.popen.stdin.close()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "median": statistics.median(ordered),
        "p90": float(np.percentile(ordered, 90)),
        "p99": float(np.percentile(ordered, 99)),
        "min": ordered[0],
        "max": ordered[-1],
    }


def warm_up(user: ServiceUser, direct: DirectProcess, concurrency: int) -> dict:
    """Every worker process imports tabpfn-client and learns the upstream's limits once."""
    log(f"warm-up: {2 * concurrency} jobs so every worker process has run one")
    tables = [data.make_table(900 + i, **SMALL) for i in range(2 * concurrency)]
    first, _ = user.fit_predict(tables[0])
    user.throughput(tables[1:], clients=concurrency)
    direct.ask(op="fit_predict", seed=950, shape=SMALL)
    # The same table through both: the same stand-in model must answer the same.
    table = data.make_table(7, **SMALL)
    _, result = user.fit_predict(table)
    direct_p = direct.ask(op="fit_predict", seed=7, shape=SMALL, return_probabilities=True)
    difference = float(
        np.max(np.abs(np.asarray(result["probabilities"]) - np.asarray(direct_p["probabilities"])))
    )
    return {"first_job_s": first.total_s, "max_probability_difference": difference}


def bench_latency(
    user: ServiceUser,
    direct: DirectProcess,
    reps: int,
    stack: BenchStack | None = None,
    seed_base: int = 10_000,
) -> dict:
    log(f"1. job latency: {reps} fit-predict jobs each way, interleaved")
    service, one_request, direct_s = [], [], []
    emulator_cpu = {"service": 0.0, "direct": 0.0}
    for i in range(reps):
        # The one-request flow (`POST ...?wait=30`) on tables of its own, outside the
        # paired emulator CPU count below.
        seconds, _ = user.fit_predict_one_request(data.make_table(seed_base + 500_000 + i, **SMALL))
        one_request.append(seconds)
        before = stack.emulator_stats()["cpu_s"] if stack else 0.0
        timing, _ = user.fit_predict(data.make_table(seed_base + i, **SMALL))
        service.append(timing)
        middle = stack.emulator_stats()["cpu_s"] if stack else 0.0
        # The same table on both sides (separate accounts: no upload is skipped), so
        # the stand-in model's work, which varies a little with the data, is paired.
        direct_s.append(direct.ask(op="fit_predict", seed=seed_base + i, shape=SMALL)["seconds"])
        after = stack.emulator_stats()["cpu_s"] if stack else 0.0
        emulator_cpu["service"] += middle - before
        emulator_cpu["direct"] += after - middle
    user.add_server_times(service)
    parts = {
        name: stats([getattr(t, name) for t in service])
        for name in ("submit_s", "queue_s", "run_s", "notify_s")
    }
    return {
        "reps": reps,
        "service": stats([t.total_s for t in service]),
        "service_one_request": stats(one_request),
        "direct": stats(direct_s),
        "parts": parts,
        # The stand-in upstream's CPU per job (GET /_emulator/stats), each side.
        "emulator_cpu_ms_per_job": {side: 1000 * v / reps for side, v in emulator_cpu.items()},
    }


def cpu_snapshot(stack: BenchStack, direct: DirectProcess) -> dict[str, dict[int, float]]:
    worker = stack.pid("worker")
    return stack.cpu_by_part({"workers": [worker, *children(worker)]}, direct.pid)


def our_cpu(stack: BenchStack, direct: DirectProcess) -> float:
    """CPU seconds of every process this run started, and of PostgreSQL and Redis."""
    pids = [p.popen.pid for p in stack.processes.values()] + [direct.pid]
    pids += children(stack.pid("worker"))
    pids += pids_named("postgres") + pids_named("redis-server")
    own = os.times()
    return sum(cpu_seconds(p) for p in pids) + own.user + own.system


def foreign_cpu(stack: BenchStack, direct: DirectProcess, busy: float, ours: float) -> float:
    """CPU seconds other work on the machine used while the benchmarks ran."""
    return max(0.0, (machine_busy_seconds() - busy) - (our_cpu(stack, direct) - ours))


def thread_split(stack: BenchStack) -> dict[str, float]:
    """CPU seconds so far of the API's and the worker processes' first threads (event
    loop, Celery's consumer) and of all their other threads (thread pool; job slots,
    lease keeper, decoders). The node's supervisor is left out (it only waits)."""
    split = dict.fromkeys(("api_main", "api_other", "worker_main", "worker_other"), 0.0)
    api = stack.pid("api")
    for side, pids in (("api", [api, *children(api)]), ("worker", children(stack.pid("worker")))):
        for pid in pids:
            main = main_thread_cpu_seconds(pid)
            split[f"{side}_main"] += main
            split[f"{side}_other"] += cpu_seconds(pid) - main
    return split


def _add_cpu(total: dict[str, float], before: dict, after: dict) -> None:
    for role, seconds in cpu_spent(before, after).items():
        total[role] = total.get(role, 0.0) + seconds


def bench_throughput(
    user: ServiceUser,
    stack: BenchStack,
    direct: DirectProcess,
    jobs: int,
    clients: int,
    rounds: int,
    seed_base: int = 30_000,
) -> dict:
    log(f"2. throughput: {jobs} jobs from {clients} clients, {rounds} round(s) each way")
    service_rounds, direct_rounds, service_latency, direct_latency = [], [], [], []
    service_timings: list[JobTiming] = []
    cpu: dict[str, dict[str, float]] = {"service": {}, "direct": {}}
    wall = {"service": 0.0, "direct": 0.0}
    emulator_cpu = {"service": 0.0, "direct": 0.0}
    threads: dict[str, float] = {}
    for r in range(rounds):
        base = seed_base + r * 1000
        seeds = [base + i for i in range(jobs)]  # the service gets the same tables
        before = cpu_snapshot(stack, direct)
        emulator_before = stack.emulator_stats()["cpu_s"]
        answer = direct.ask(op="throughput", seeds=seeds, shape=SMALL, threads=clients)
        emulator_cpu["direct"] += stack.emulator_stats()["cpu_s"] - emulator_before
        _add_cpu(cpu["direct"], before, cpu_snapshot(stack, direct))
        wall["direct"] += answer["seconds"]
        direct_rounds.append(jobs / answer["seconds"])
        direct_latency += answer["latencies"]
        tables = [data.make_table(base + i, **SMALL) for i in range(jobs)]
        before = cpu_snapshot(stack, direct)
        threads_before = thread_split(stack)
        emulator_before = stack.emulator_stats()["cpu_s"]
        seconds, timings = user.throughput(tables, clients=clients)
        emulator_cpu["service"] += stack.emulator_stats()["cpu_s"] - emulator_before
        _add_cpu(cpu["service"], before, cpu_snapshot(stack, direct))
        for key, value in thread_split(stack).items():
            threads[key] = threads.get(key, 0.0) + value - threads_before[key]
        wall["service"] += seconds
        service_rounds.append(jobs / seconds)
        service_latency += [t.total_s for t in timings]
        user.add_server_times(timings)  # after the round: its GETs are not timed
        service_timings += timings
    return {
        "jobs": jobs,
        "clients": clients,
        "rounds": rounds,
        "service_jobs_per_s": service_rounds,
        "direct_jobs_per_s": direct_rounds,
        "service_latency": stats(service_latency),
        "direct_latency": stats(direct_latency),
        # Where a service job's time went: submit, queued, run, notify (as section 1).
        "service_parts": {
            part: stats([getattr(t, f"{part}_s") for t in service_timings])
            for part in ("submit", "queue", "run", "notify")
        },
        # CPU milliseconds per job, by process; and cores busy on average.
        "cpu_ms_per_job": {
            side: {role: 1000 * v / (jobs * rounds) for role, v in cpu[side].items()}
            for side in cpu
        },
        "cores_busy": {side: sum(cpu[side].values()) / wall[side] for side in cpu},
        # The service side's API and worker CPU split by thread (see `thread_split`).
        "thread_ms_per_job": {k: 1000 * v / (jobs * rounds) for k, v in threads.items()},
        "emulator_cpu_ms_per_job": {
            side: 1000 * v / (jobs * rounds) for side, v in emulator_cpu.items()
        },
    }


LIGHT_LATENCY_S = 0.05


def bench_light(
    user: ServiceUser,
    stack: BenchStack,
    direct: DirectProcess,
    *,
    reps: int,
    jobs: int,
    clients: int,
    rounds: int,
    restore_s: float,
) -> dict:
    """Sections 1 and 2 again against a faster upstream (50 ms per call, as issue 13
    first measured): the service's cost per job is about fixed, so its ratio to a
    direct job that takes half as long is what a faster upstream would see."""
    log(f"1b/2b. the same at {LIGHT_LATENCY_S * 1000:.0f} ms per upstream call")
    stack.set_latency(LIGHT_LATENCY_S)
    try:
        # Tables of their own (new seeds): an account that saw a table skips its upload.
        latency = bench_latency(user, direct, reps, stack, seed_base=60_000)
        throughput = bench_throughput(user, stack, direct, jobs, clients, rounds, seed_base=70_000)
    finally:
        stack.set_latency(restore_s)
    return {"latency_s": LIGHT_LATENCY_S, "latency": latency, "throughput": throughput}


def bench_floor(
    user: ServiceUser, stack: BenchStack, direct: DirectProcess, *, reps: int, restore_s: float
) -> dict:
    """The path of DESIGN.md without the service's features (bench/floor.py), one job at a
    time beside the direct client and the service, at 50 ms per call and the run's own.
    The floor's processes stop with the section: later sections do not share the cores."""
    latencies = sorted({LIGHT_LATENCY_S, restore_s})
    log(f"2c. the path's floor: {reps} jobs each way at {latencies} s per call")
    with ExitStack() as floor_processes:
        started = floor.start_floor(stack, floor_processes, stack.scratch)
        try:
            rows = floor.measure_on(stack, user, direct, started, latencies, reps, seed=80_000)
        finally:
            stack.set_latency(restore_s)
    return {"rows": rows}


def bench_submit(user: ServiceUser, clients: int, idle_n: int, busy_n: int) -> dict:
    log(f"3a. submit latency of POST /jobs/fit: {idle_n} with idle workers")
    idle = []
    for i in range(idle_n):
        seconds, job_id = user.submit_fit(data.make_table(50_000 + i, **SMALL))
        idle.append(seconds)
        user.wait(job_id)

    log(f"3b. submit latency: {busy_n} while {clients} clients keep the workers busy")
    stop = threading.Event()
    background_jobs = [0]

    def keep_busy(k: int) -> None:
        i = 0
        while not stop.is_set():
            user.fit_predict(data.make_table(60_000 + k * 1000 + i, **SMALL))
            i += 1
            background_jobs[0] += 1

    threads = [threading.Thread(target=keep_busy, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(3)  # let the backlog build
    tables = [data.make_table(70_000 + i, **SMALL) for i in range(busy_n)]
    busy, ids = [], []
    for table in tables:
        seconds, job_id = user.submit_fit(table)
        busy.append(seconds)
        ids.append(job_id)
        time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join()
    for job_id in ids:
        user.wait(job_id)
    return {"idle": stats(idle), "busy": stats(busy), "background_jobs": background_jobs[0]}


def bench_auth(user: ServiceUser, stack: BenchStack, threads: int, duration_s: float) -> dict:
    log(f"3c. requests/s with {threads} clients, {duration_s:.0f} s each")
    cases = {
        "GET /healthz (no auth)": (f"{stack.api_url}/healthz", False),
        "GET /api/v1/auth/me, bcrypt cache on (API_KEY_CACHE_S=60)": (
            f"{stack.api_url}/api/v1/auth/me",
            True,
        ),
        "GET /api/v1/auth/me, bcrypt cache off (API_KEY_CACHE_S=0)": (
            f"{stack.api_nocache_url}/api/v1/auth/me",
            True,
        ),
        "GET /api/v1/jobs?limit=1, bcrypt cache on": (
            f"{stack.api_url}/api/v1/jobs?limit=1",
            True,
        ),
    }
    out = {}
    for name, (url, authenticated) in cases.items():
        rate, failures = user.requests_per_second(
            url, authenticated=authenticated, threads=threads, duration_s=duration_s
        )
        out[name] = {"rps": rate, "failures": failures}
    return {"threads": threads, "duration_s": duration_s, "cases": out}


RATE_HZ = profiling.RATE_HZ
WORKER_FRAME = "serve (worker/runner.py"
DIRECT_FRAME = "fit_predict (bench/direct.py"


def _summary(stacks, categories, *, jobs: int, within=None, skip_idle=False) -> dict:
    split, samples = profiling.categorise(stacks, categories, within=within, skip_idle=skip_idle)
    per_job_ms = 1000 * samples / RATE_HZ / jobs
    return {
        "samples": samples,
        "per_job_ms": per_job_ms,
        "split": [(c, share, share / 100 * per_job_ms) for c, share in split],
        "top": profiling.top_frames(stacks, within=within, skip_idle=skip_idle),
    }


def bench_profiles(
    user: ServiceUser,
    stack: BenchStack,
    direct: DirectProcess,
    out_dir: Path,
    reps: int,
    jobs: int,
    clients: int,
) -> dict:
    """Benchmarks 1 and 2 again with py-spy attached (service side; benchmark 1 direct too)."""
    if not profiling.available():
        return {"skipped": "py-spy is not installed (pip install -r bench/requirements.txt)"}
    out: dict = {}

    def one_at_a_time() -> None:
        for i in range(reps):
            user.fit_predict(data.make_table(80_000 + i, **SMALL))

    def concurrently() -> None:
        user.throughput([data.make_table(90_000 + i, **SMALL) for i in range(jobs)], clients)

    for name, n, run in (("latency", reps, one_at_a_time), ("throughput", jobs, concurrently)):
        log(f"profile: benchmark {name} under py-spy")
        api = profiling.record(f"{name}-api", stack.pid("api"), out_dir, idle=False)
        worker = profiling.record(
            f"{name}-worker", stack.pid("worker"), out_dir, idle=True, subprocesses=True
        )
        time.sleep(1.5)  # py-spy attaches
        run()
        time.sleep(0.5)
        out[name] = {
            "jobs": n,
            "api": _summary(api.stop(), profiling.API_CATEGORIES, jobs=n, skip_idle=True),
            "worker": _summary(
                worker.stop(), profiling.WORKER_CATEGORIES, jobs=n, within=WORKER_FRAME
            ),
        }
        if name == "latency":
            recording = profiling.record("latency-direct", direct.pid, out_dir, idle=True)
            time.sleep(1.5)
            for i in range(reps):
                direct.ask(op="fit_predict", seed=85_000 + i, shape=SMALL)
            out[name]["direct"] = _summary(
                recording.stop(), profiling.WORKER_CATEGORIES, jobs=reps, within=DIRECT_FRAME
            )
    return out


def _worker_pids(stack: BenchStack) -> list[int]:
    """The processes holding jobs: the node itself under the threads pool, its children under
    prefork."""
    worker = stack.pid("worker")
    return children(worker) or [worker]


def _reset_service_memory(stack: BenchStack) -> list[int]:
    pids = [stack.pid("api"), *_worker_pids(stack)]
    for pid in pids:
        reset_peak_memory(pid)
    return pids


def _service_memory(stack: BenchStack, rss_before: dict[int, int]) -> dict:
    api = stack.pid("api")
    api_mem = memory_kb(api)
    pool = {pid: memory_kb(pid) for pid in _worker_pids(stack)}
    busiest = max(pool, key=lambda pid: pool[pid]["VmHWM"] - rss_before.get(pid, 0))
    return {
        "api_peak_mb": api_mem["VmHWM"] / 1024,
        "api_growth_mb": (api_mem["VmHWM"] - rss_before[api]) / 1024,
        "worker_peak_mb": pool[busiest]["VmHWM"] / 1024,
        "worker_growth_mb": (pool[busiest]["VmHWM"] - rss_before.get(busiest, 0)) / 1024,
    }


def bench_large(user: ServiceUser, stack: BenchStack, direct: DirectProcess, rows: int) -> dict:
    shape = {"rows": rows, "features": 20, "test_rows": rows // 10}
    log(f"4. large data: {rows} x 20 train, {rows // 10} test rows")
    table = data.make_table(123_456, **shape)
    cases: dict[str, dict] = {}

    def measure(name: str, submit) -> None:
        log(f"4. large data: {name}")
        pids = _reset_service_memory(stack)
        rss_before = {pid: memory_kb(pid)["VmRSS"] for pid in pids}
        try:
            timing, result = submit()
        except Exception as exc:  # reported as measured: a failure is a finding
            cases[name] = {"error": str(exc)[:400]}
            return
        assert len(result["predictions"]) == shape["test_rows"]
        user.add_server_times([timing])
        # GET /result again, away from the job's own traffic: its steady cost.
        job_id = timing.job_id
        again = []
        for _ in range(3):
            start = time.perf_counter()
            user.result(job_id)
            again.append(time.perf_counter() - start)
        cases[name] = {
            "result_again_s": statistics.median(again),
            "total_s": timing.total_s,
            "submit_s": timing.submit_s,
            "queue_s": timing.queue_s,
            "run_s": timing.run_s,
            **_service_memory(stack, rss_before),
        }

    body = json.dumps(data.fit_predict_body(table)).encode()
    cases_sizes = {"JSON rows": len(body)}
    measure("JSON rows", lambda: user.post_json_job("/jobs/fit-predict", content=body))

    fields = upload_fields(stack.api_url)
    upload = {"supported": fields is not None, "fields": sorted(fields or {})}
    if fields is not None:
        train_field = next((f for f in ("train_file", "train", "file") if f in fields), None)
        test_field = next((f for f in ("test_file", "test") if f in fields), None)
        upload["train_field"], upload["test_field"] = train_field, test_field
        for fmt, encode, mime in (
            ("Parquet", data.to_parquet, "application/vnd.apache.parquet"),
            ("CSV", data.to_csv, "text/csv"),
        ):
            train_bytes = encode(data.train_frame(table))
            test_bytes = encode(table.X_test)
            cases_sizes[f"{fmt} upload"] = len(train_bytes) + len(test_bytes)
            ext = fmt.lower()
            form = {"task": "classification", "target": "target", "output": "probabilities"}
            files = {
                train_field: (f"train.{ext}", train_bytes, mime),
                test_field: (f"test.{ext}", test_bytes, mime),
            }
            measure(
                f"{fmt} upload",
                lambda form=form, files=files: user.post_file_job("/jobs/fit-predict", form, files),
            )

    log("4. large data: direct tabpfn-client")
    answer = direct.ask(op="fit_predict", seed=123_456, shape=shape, measure_memory=True)
    memory = answer["memory_kb"]
    cases["direct tabpfn-client"] = {
        "total_s": answer["seconds"],
        "client_peak_mb": memory["VmHWM"] / 1024,
        "client_growth_mb": (memory["VmHWM"] - memory["rss_before"]) / 1024,
    }
    return {"shape": shape, "cases": cases, "sizes": cases_sizes, "upload": upload}


SECTIONS = (
    "latency",
    "throughput",
    "light",
    "floor",
    "firstjob",
    "submit",
    "auth",
    "profiles",
    "large",
    *FLEET_SECTIONS,
    *STANDALONE_SECTIONS,
)


def run_on_stack(
    args: argparse.Namespace,
    settings: Settings,
    names: list[str],
    facts: dict,
    results: dict,
    raw_dir: Path,
) -> None:
    """The sections that share one stack (bench/stack.py), after its warm-up, into `results`."""
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tabpfn-bench-") as scratch:
        scratch_dir = Path(scratch)
        log("starting PostgreSQL/Redis, a fresh database, the emulator, two APIs, the workers")
        running = start_stack(stack, scratch_dir, settings)
        running.logs_dir = raw_dir
        facts["services"] = running.services_origin
        facts.update(service_versions(running))
        try:
            user = ServiceUser.register(running.api_url, SERVICE_TOKEN)
            direct = DirectProcess(running.emulator_url, running.env, stack)
            busy_at_start = machine_busy_seconds()
            ours_at_start = our_cpu(running, direct)
            started = time.perf_counter()
            results["warm_up"] = warm_up(user, direct, args.worker_concurrency)
            sections = {
                "latency": lambda: bench_latency(user, direct, args.reps, running),
                "throughput": lambda: bench_throughput(
                    user, running, direct, args.jobs, args.clients, args.rounds
                ),
                "light": lambda: bench_light(
                    user,
                    running,
                    direct,
                    reps=max(3, args.reps * 2 // 3),
                    jobs=args.jobs,
                    clients=args.clients,
                    rounds=args.rounds,
                    restore_s=settings.latency_s,
                ),
                "floor": lambda: bench_floor(
                    user,
                    running,
                    direct,
                    reps=max(10, args.reps * 2 // 3),
                    restore_s=settings.latency_s,
                ),
                "firstjob": lambda: bench_first_job(
                    running,
                    user.api_key,
                    trials=3 if args.quick else 10,
                    seed_base=70_000,
                ),
                "submit": lambda: bench_submit(
                    user,
                    args.clients,
                    idle_n=10 if args.quick else 30,
                    busy_n=30 if args.quick else 100,
                ),
                "auth": lambda: bench_auth(
                    user, running, threads=4, duration_s=2 if args.quick else 5
                ),
                "profiles": lambda: bench_profiles(
                    user, running, direct, raw_dir, args.reps, args.jobs, args.clients
                ),
                "large": lambda: bench_large(user, running, direct, args.large_rows),
            }
            # Issues 13/14: worker nodes, claim at scale, fairness (bench/sections.py).
            sections |= fleet_sections(
                running,
                lambda token: DirectProcess(running.emulator_url, running.env, stack, token),
                quick=args.quick,
            )
            # One probe between two sections stands for the end of one and the start of
            # the next (the stack idles in between either way).
            speed = results["machine_speed"] = {"start": machine_speed.probe(), "sections": {}}
            before = speed["start"]
            for name in names:
                if name != "large" or args.large_rows:
                    results[name] = sections[name]()
                    after = machine_speed.probe()
                    speed["sections"][name] = machine_speed.bracket(before, after)
                    before = after
            results["resent_messages"] = running.resent_messages()
            results["foreign_cpu_s"] = foreign_cpu(running, direct, busy_at_start, ours_at_start)
            results["shared_stack_s"] = time.perf_counter() - started
        except BaseException:
            print(f"bench failed; the processes' logs are in {raw_dir}", file=sys.stderr)
            raise
        finally:  # kept beside the results either way, to read against them
            for process in running.processes.values():
                (raw_dir / f"{process.name}.log").write_text(process.log())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--latency", type=float, default=0.1, help="emulator seconds per call")
    parser.add_argument("--worker-concurrency", type=int, default=8)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--reps", type=int, default=30)
    # 80: ten jobs per client and round. With five (40, before session 11), a round
    # lasted ~2.5 s and its synchronized start and its tail (a round ends with its
    # slowest client) weighed on the side whose jobs vary more.
    parser.add_argument("--jobs", type=int, default=80, help="jobs per throughput round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--large-rows", type=int, help="rows of the large case (100000; 0: skip)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and fast")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--only",
        type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
        metavar="SECTIONS",
        help=f"comma-separated sections from {', '.join(SECTIONS)}: run these (after the "
        "shared stack's warm-up; submitload and uploads start stacks of their own), print "
        "their figures as JSON and leave the output file alone",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="only rewrite the output from an earlier run's results.json (e.g. after "
        "editing bench/ANALYSIS.md)",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.only or []) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.render:
        saved = json.loads(args.render.read_text())
        saved["settings"] = Settings(**saved["settings"])
        args.output.write_text(render(saved["facts"], saved))
        log(f"wrote {args.output} from {args.render}")
        return
    if args.quick:
        args.reps, args.jobs, args.rounds = 3, 16, 1
    if args.large_rows is None:
        args.large_rows = 0 if args.quick else 100_000

    settings = Settings(
        latency_s=args.latency,
        worker_concurrency=args.worker_concurrency,
        emulator_max_rows=200_000,
        max_request_bytes=512 * 1024 * 1024,
    )
    started = time.perf_counter()
    facts = machine_facts()
    # Kept after the run: the numbers as JSON and py-spy's collapsed stacks.
    raw_dir = Path(tempfile.mkdtemp(prefix="tabpfn-bench-raw-"))
    results: dict = {"args": vars(args) | {"output": str(args.output)}, "settings": settings}
    names = args.only or SECTIONS
    on_stack = [name for name in names if name not in STANDALONE_SECTIONS]
    if on_stack:
        run_on_stack(args, settings, on_stack, facts, results, raw_dir)
    # After the shared stack is gone: these start their own, and measure the API alone.
    standalone = standalone_sections(quick=args.quick, latency_s=args.latency)
    for name in names:
        if name in STANDALONE_SECTIONS:
            results[name] = standalone[name]()
    results["wall_s"] = time.perf_counter() - started
    saved = results | {"settings": dataclasses.asdict(settings), "facts": facts}
    (raw_dir / "results.json").write_text(json.dumps(saved, indent=2, default=str))
    if args.only:
        print(json.dumps({name: results[name] for name in args.only if name in results}, indent=2))
        log(f"done in {results['wall_s']:.0f} s; raw data in {raw_dir}")
        return
    args.output.write_text(render(facts, results))
    log(f"done in {results['wall_s']:.0f} s; wrote {args.output}; raw data in {raw_dir}")


def service_versions(stack: BenchStack) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine(stack.env["DATABASE_URL"])
    with engine.connect() as connection:
        postgres = connection.execute(text("SHOW server_version")).scalar()
    engine.dispose()
    import redis

    from shared.core.redis_client import redis_py_url

    info = redis.Redis.from_url(redis_py_url(stack.env["REDIS_URL"])).info("server")
    return {"postgres": postgres, "redis": info.get("redis_version")}


if __name__ == "__main__":
    main()
