"""The sections of issues 13, 14 and 15, by name, with their sizes (full run and --quick).

Kept apart from bench/__main__.py so the earlier sections and these can change
independently; `python -m bench --only inflight --quick` runs one of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from bench.claim import bench_claim
from bench.fairness import bench_fairness
from bench.fleet import Context, bench_coldstart, bench_inflight, bench_scaleout, log
from bench.pools import bench_pools
from bench.stack import BenchStack
from bench.submit_load import run as run_submit_load
from bench.uploads import run as run_uploads

FLEET_SECTIONS = ("inflight", "pools", "coldstart", "scaleout", "claim", "fairness")
# Issue 15's sections start stacks of their own (bench/submit_load.py,
# bench/uploads.py), so they run after the shared stack is gone.
STANDALONE_SECTIONS = ("submitload", "uploads")


def fleet_sections(
    stack: BenchStack, direct: Callable[[str], object], *, quick: bool
) -> dict[str, Callable[[], dict]]:
    ctx = Context(stack=stack, direct=direct, quick=quick)
    return {
        # At 1 s per upstream call a fit-predict takes ~4.5 s: each client runs a few.
        "inflight": lambda: bench_inflight(
            ctx, sizes=(8, 16) if quick else (32, 64), jobs_per_client=1 if quick else 3
        ),
        "pools": lambda: bench_pools(
            ctx,
            clients=8 if quick else 32,
            jobs_per_client=1 if quick else 3,
            rounds=1 if quick else 3,
        ),
        "coldstart": lambda: bench_coldstart(ctx, n=8 if quick else 16, trials=1 if quick else 5),
        "scaleout": lambda: bench_scaleout(
            ctx,
            clients=16 if quick else 64,
            jobs_per_client=1 if quick else 2,
            concurrency=4 if quick else 16,
        ),
        "claim": lambda: {
            **bench_claim(
                stack,
                jobs=10_000 if quick else 100_000,
                users=100 if quick else 1_000,
                claims=50 if quick else 200,
            ),
            # A few busy users among many idle accounts: a look must not walk them all.
            "idle_accounts": bench_claim(
                stack,
                jobs=2_000,
                users=20,
                claims=50 if quick else 200,
                idle=2_000 if quick else 20_000,
            ),
        },
        "fairness": lambda: bench_fairness(ctx),
    }


def standalone_sections(*, quick: bool, latency_s: float) -> dict[str, Callable[[], dict]]:
    return {
        "submitload": lambda: bench_submitload(
            seconds=15 if quick else 60, clients=8, latency_s=latency_s
        ),
        "uploads": lambda: bench_uploads(sizes_mib=[10] if quick else [10, 100, 500]),
    }


# (label, API_PROCESSES, the API pinned to CPU 0 and the rest to CPU 1)
CASES = [("1", 1, False), ("2", 2, False)]
if (os.cpu_count() or 1) >= 2:
    CASES.append(("1, on a core of its own", 1, True))


def bench_submitload(*, seconds: float, clients: int, latency_s: float) -> dict:
    """Submit, long-poll and result under load: API_PROCESSES=1, then 2, then 1 with the API
    on a core of its own (what the API's figures would be on a machine it does not share)."""
    runs = {}
    for label, processes, api_core in CASES:
        log(f"submitload: {clients} clients for {seconds:.0f} s, API_PROCESSES={label}")
        runs[label] = run_submit_load(
            api_processes=processes,
            clients=clients,
            seconds=seconds,
            latency=latency_s,
            api_core=api_core,
        )
    return {"clients": clients, "seconds": seconds, "latency_s": latency_s, "runs": runs}


def bench_uploads(*, sizes_mib: list[int]) -> dict:
    log(f"uploads: CSV and Parquet files of {sizes_mib} MiB")
    return {"sizes_mib": sizes_mib, "cases": run_uploads(sizes_mib)}
