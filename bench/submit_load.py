"""Submit under load: POST /jobs/fit-predict, GET ?wait= and GET /result with 8 clients.

python -m bench.submit_load                     # one API process, 60 s of load
python -m bench.submit_load --api-processes 2   # two, each client on one of them
python -m bench.submit_load --profile DIR       # and py-spy's stacks of the API(s)

A stack of its own: a fresh database, the emulator, the API process(es), one
worker (threads as in production) and beat. Each client loops over new small
tables (500 × 10, 100 test rows, probabilities): submit, long-poll, result.
Reported: per-request wall time p50/p99 of each step, and the API's CPU per
job (its /proc CPU time over the run, divided by the jobs it served).
"""

from __future__ import annotations

import argparse
import json
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
from bench.memory import cpu_seconds
from bench.service import ServiceUser
from bench.stack import SECRET_KEY, SERVICE_TOKEN, STOP_TIMEOUT_S, start_in
from cli.ports import free_port
from cli.supervisor import wait_for_http
from cli.throwaway import base_env, create_database, drop_database, find_services, migrate

SMALL = {"rows": 500, "features": 10, "test_rows": 100}


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


def run(args: argparse.Namespace) -> dict:
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tabpfn-bench-load-") as tmp:
        scratch = Path(tmp)
        services = find_services(stack, scratch / "services")
        database_url = create_database(services.admin_database_url)
        stack.callback(drop_database, services.admin_database_url, database_url)
        migrate(database_url)
        emulator_port = free_port()
        api_ports = [free_port() for _ in range(args.api_processes)]
        env = base_env(
            DATABASE_URL=database_url,
            REDIS_URL=services.redis_url,
            SECRET_KEY=SECRET_KEY,
            TABPFN_API_URL=f"http://127.0.0.1:{emulator_port}",
            EMULATOR_TOKENS=SERVICE_TOKEN,
            EMULATOR_LATENCY_S=str(args.latency),
            RATE_LIMIT_PER_MINUTE="0",
            LOG_LEVEL="INFO",
            HOME=str(scratch),
        )
        emulator = start_in(scratch, "emulator", ["emulator", "--port", str(emulator_port)], env)
        stack.callback(emulator.stop, STOP_TIMEOUT_S)
        wait_for_http(f"http://127.0.0.1:{emulator_port}/", emulator, timeout=30)
        apis = []
        for i, port in enumerate(api_ports):
            api = start_in(scratch, f"api{i}", ["api", "--port", str(port)], env)
            stack.callback(api.stop, STOP_TIMEOUT_S)
            wait_for_http(f"http://127.0.0.1:{port}/healthz", api, timeout=60)
            apis.append(api)
        hostname = f"load-{uuid.uuid4().hex[:6]}@%h"
        worker_args = ["worker", "--concurrency", "8", "--without-mingle", "--without-gossip"]
        worker = start_in(scratch, "worker", [*worker_args, "--hostname", hostname], env)
        stack.callback(worker.stop, STOP_TIMEOUT_S)
        beat = start_in(scratch, "beat", ["beat"], env)
        stack.callback(beat.stop, STOP_TIMEOUT_S)

        # A long timeout: the first setup of a cold process takes seconds (issue 16).
        setup = httpx.post(
            f"http://127.0.0.1:{api_ports[0]}/api/v1/auth/setup",
            json={"tabpfn_token": SERVICE_TOKEN},
            timeout=120,
        ).raise_for_status()
        users = [
            ServiceUser(f"http://127.0.0.1:{port}", setup.json()["api_key"]) for port in api_ports
        ]
        for user in users:  # warm up every API process and the worker
            user.fit_predict(data.make_table(1, **SMALL))

        submit, wait, result, totals = [], [], [], []
        stop = threading.Event()
        lock = threading.Lock()

        def client(k: int) -> None:
            user = users[k % len(users)]
            i = 0
            while not stop.is_set():
                timing, _ = user.fit_predict(data.make_table(10_000 + k * 10_000 + i, **SMALL))
                with lock:
                    submit.append(timing.submit_s)
                    wait.append(timing.wait_s)
                    result.append(timing.result_s)
                    totals.append(timing.total_s)
                i += 1

        recordings = []
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            recordings = [
                profiling.record(f"api{i}", api.popen.pid, args.profile, idle=False)
                for i, api in enumerate(apis)
            ]
            time.sleep(1.5)
        cpu_before = sum(cpu_seconds(api.popen.pid) for api in apis)
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for thread in threads:
            thread.start()
        time.sleep(args.seconds)
        stop.set()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        api_cpu = sum(cpu_seconds(api.popen.pid) for api in apis) - cpu_before
        out = {
            "api_processes": args.api_processes,
            "clients": args.clients,
            "jobs": len(totals),
            "jobs_per_s": len(totals) / wall,
            "api_cpu_ms_per_job": 1000 * api_cpu / max(1, len(totals)),
            "submit": _percentiles(submit),
            "long_poll": _percentiles(wait),
            "result": _percentiles(result),
            "job_total": _percentiles(totals),
        }
        if recordings:
            stacks = sum((r.stop() for r in recordings), start=profiling.Counter())
            split, samples = profiling.categorise(stacks, profiling.API_CATEGORIES, skip_idle=True)
            per_job = 1000 * samples / profiling.RATE_HZ / max(1, len(totals))
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
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
