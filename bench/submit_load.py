"""Submit under load: POST /jobs/fit-predict, GET ?wait= and GET /result with 8 clients.

python -m bench.submit_load                     # API_PROCESSES=1, 60 s of load
python -m bench.submit_load --api-processes 2   # API_PROCESSES=2: two on one port
python -m bench.submit_load --profile DIR       # and py-spy's stacks of the API(s)
python -m bench --only submitload               # both, as a section of `make bench`

A stack of its own: a fresh database, the emulator (EMULATOR_MODEL=trivial,
as in the rest of the bench), one `tabpfn-api api` with API_PROCESSES set,
one worker (threads as in production) and beat. Each client loops over new
small tables (500 × 10, 100 test rows, probabilities): submit, long-poll,
result. Reported: per-request wall time p50/p99 of each step (the long-poll
from the job's end to its answer), the API's CPU per job (its /proc CPU time
over the run, uvicorn's supervisor and its serving processes summed, divided
by the jobs it served) and the emulator's (GET /_emulator/stats).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

from bench import data, profiling
from bench.memory import children, cpu_seconds, pids_named
from bench.service import ServiceUser
from bench.stack import SECRET_KEY, SERVICE_TOKEN, STOP_TIMEOUT_S, start_in
from cli.ports import free_port
from cli.supervisor import wait_for_http
from cli.throwaway import (
    UNPACED,
    find_services,
    stack_env,
    throwaway_database,
)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ms = np.array(values) * 1000
    return {
        "n": len(values),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": statistics.fmean(ms),
    }


def _tree_cpu_seconds(pid: int) -> float:
    """With API_PROCESSES > 1 the serving processes are children of uvicorn's supervisor."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children(pid))


def _tasks(pid: int) -> list[int]:
    """Every thread of `pid` (an affinity is per thread)."""
    try:
        return [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []


def _pin(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        for task in _tasks(pid):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(task, cpus)


def _api_on_a_core_of_its_own(stack: ExitStack, api_pid: int, others: list[int]) -> None:
    """CPU 0 for the API's processes, CPU 1 for everything else the load touches.

    The question it answers: what would the API's latency be if it did not share
    its cores with the workers, PostgreSQL, Redis, the emulator and the load
    generator (as in a deployment, where the upstream is not even on the machine)?
    PostgreSQL's new backends inherit the postmaster's CPU; all is undone after.
    """
    everyone = set(range(os.cpu_count() or 1))
    servers = [*pids_named("postgres"), *pids_named("redis-server")]
    rest = [*others, *servers, os.getpid()]
    stack.callback(lambda: _pin([*rest, *pids_named("postgres")], everyone))
    _pin(rest, {1})
    _pin([api_pid, *children(api_pid)], {0})


def run(
    *,
    api_processes: int,
    clients: int,
    seconds: float,
    latency: float,
    profile: Path | None = None,
    api_core: bool = False,
) -> dict:
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tabpfn-bench-load-") as tmp:
        scratch = Path(tmp)
        services = find_services(stack, scratch / "services")
        database_url = throwaway_database(stack, services)
        emulator_port, api_port = free_port(), free_port()
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        env = stack_env(
            database_url,
            services.redis_url,
            SECRET_KEY,
            emulator_url,
            [SERVICE_TOKEN],
            EMULATOR_LATENCY_S=str(latency),
            EMULATOR_MODEL="trivial",
            # A queue of this run's own: a test run on the same Redis cannot take its wake-ups.
            CELERY_QUEUE=f"tabpfn-api-load-{uuid.uuid4().hex[:8]}",
            # The published 60 fits a minute would pace the load, not the API.
            **UNPACED,
            RATE_LIMIT_PER_MINUTE="0",
            API_PROCESSES=str(api_processes),
            LOG_LEVEL="INFO",
            HOME=str(scratch),
        )
        emulator = start_in(scratch, "emulator", ["emulator", "--port", str(emulator_port)], env)
        stack.callback(emulator.stop, STOP_TIMEOUT_S)
        wait_for_http(f"{emulator_url}/", emulator, timeout=30)
        api = start_in(scratch, "api", ["api", "--port", str(api_port)], env)
        stack.callback(api.stop, STOP_TIMEOUT_S)
        wait_for_http(f"http://127.0.0.1:{api_port}/healthz", api, timeout=60)
        hostname = f"load-{uuid.uuid4().hex[:6]}@%h"
        worker_args = ["worker", "--concurrency", "8", "--without-mingle", "--without-gossip"]
        worker = start_in(scratch, "worker", [*worker_args, "--hostname", hostname], env)
        stack.callback(worker.stop, STOP_TIMEOUT_S)
        beat = start_in(scratch, "beat", ["beat"], env)
        stack.callback(beat.stop, STOP_TIMEOUT_S)

        if api_core:
            pids = [emulator.popen.pid, worker.popen.pid, beat.popen.pid]
            _api_on_a_core_of_its_own(stack, api.popen.pid, pids)
        user = ServiceUser.register(f"http://127.0.0.1:{api_port}", SERVICE_TOKEN)
        # Warm up the worker and, most likely, every API process (the kernel picks
        # which one accepts a connection; each client thread has its own).
        warm = [data.make_table(1 + i, **data.SMALL) for i in range(2 * clients)]
        user.throughput(warm, clients=clients)

        submit, timings, totals = [], [], []
        stop = threading.Event()
        lock = threading.Lock()

        def client(k: int) -> None:
            i = 0
            while not stop.is_set():
                timing, _ = user.fit_predict(data.make_table(10_000 + k * 10_000 + i, **data.SMALL))
                with lock:
                    submit.append(timing.submit_s)
                    timings.append(timing)
                    totals.append(timing.total_s)
                i += 1

        recordings = []
        if profile:
            profile.mkdir(parents=True, exist_ok=True)
            recordings = [
                profiling.record(f"api{i}", pid, profile, idle=False)
                for i, pid in enumerate(children(api.popen.pid) or [api.popen.pid])
            ]
            time.sleep(1.5)
        cpu_before = _tree_cpu_seconds(api.popen.pid)
        emulator_before = httpx.get(f"{emulator_url}/_emulator/stats").json()["cpu_s"]
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        api_cpu = _tree_cpu_seconds(api.popen.pid) - cpu_before
        emulator = httpx.get(f"{emulator_url}/_emulator/stats").json()
        jobs = max(1, len(totals))
        user.add_server_times(timings)  # after the CPU readings: these GETs are not the load
        out = {
            "api_processes": api_processes,
            "api_core": api_core,
            "clients": clients,
            "seconds": wall,
            "jobs": len(totals),
            "jobs_per_s": len(totals) / wall,
            "api_cpu_ms_per_job": 1000 * api_cpu / jobs,
            "emulator_cpu_ms_per_job": 1000 * (emulator["cpu_s"] - emulator_before) / jobs,
            "emulator_model": emulator["model"],
            "submit": _percentiles(submit),
            # finished_at → the result at the client (GET /jobs/{id}/result?wait=30)
            "long_poll": _percentiles([t.notify_s for t in timings]),
            "job_total": _percentiles(totals),
        }
        if recordings:
            stacks = sum((r.stop() for r in recordings), start=profiling.Counter())
            split, samples = profiling.categorise(stacks, profiling.API_CATEGORIES, skip_idle=True)
            per_job = 1000 * samples / profiling.RATE_HZ / jobs
            out["profile"] = {
                "cpu_ms_per_job_sampled": per_job,
                "split": [(c, round(share, 1)) for c, share in split],
                "top": profiling.top_frames(stacks, skip_idle=True, n=20),
            }
        return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.submit_load", description=__doc__)
    parser.add_argument("--api-processes", type=int, default=1)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--latency", type=float, default=0.1, help="emulator seconds per call")
    parser.add_argument("--profile", type=Path, help="record py-spy stacks of the API here")
    parser.add_argument(
        "--api-core", action="store_true", help="the API on CPU 0, everything else on CPU 1"
    )
    print(json.dumps(run(**vars(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
