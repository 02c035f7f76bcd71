"""The sections of issues 13 and 14, by name, with their sizes (full run and --quick).

Kept apart from bench/__main__.py so the earlier sections and these can change
independently; `python -m bench --only inflight --quick` runs one of them.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.claim import bench_claim
from bench.fairness import bench_fairness
from bench.fleet import Context, bench_coldstart, bench_inflight, bench_scaleout
from bench.stack import BenchStack

FLEET_SECTIONS = ("inflight", "coldstart", "scaleout", "claim", "fairness")


def fleet_sections(
    stack: BenchStack, direct: Callable[[str], object], *, quick: bool
) -> dict[str, Callable[[], dict]]:
    ctx = Context(stack=stack, direct=direct, quick=quick)
    return {
        # At 1 s per upstream call a fit-predict takes ~4.5 s: each client runs a few.
        "inflight": lambda: bench_inflight(
            ctx, sizes=(8, 16) if quick else (32, 64), jobs_per_client=1 if quick else 3
        ),
        "coldstart": lambda: bench_coldstart(ctx, n=8 if quick else 16),
        "scaleout": lambda: bench_scaleout(
            ctx,
            clients=16 if quick else 64,
            jobs_per_client=1 if quick else 2,
            concurrency=4 if quick else 16,
        ),
        "claim": lambda: bench_claim(
            stack,
            jobs=10_000 if quick else 100_000,
            users=100 if quick else 1_000,
            claims=50 if quick else 200,
        ),
        "fairness": lambda: bench_fairness(ctx),
    }
