"""Section 5b: the worker's pool, chosen on evidence: each candidate measured the same way.

Issue 13 asks for the mechanism that holds a node's jobs in flight to be chosen
by measurement: Celery's prefork (what the worker was), its threads pool (what
it is, over one process or over `WORKER_PROCESSES`' default of two) and its
gevent pool. Each candidate is a node with the same number of slots as there
are clients, measured as section 5 measures the default node: N clients at 1 s
per upstream call, in rounds that alternate with N threads of direct
tabpfn-client, with the node's memory, CPU and connections sampled meanwhile.

An asyncio loop inside the worker is not among them: tabpfn-client's calls are
synchronous (httpx's blocking client, and its own upload threads), so a loop
would still run each job's calls on a thread of its own, which is the threads
pool with a loop in front.
"""

from __future__ import annotations

import sys

from bench.fleet import (
    Context,
    database_engine,
    inflight_pair,
    log,
    node_settings,
    stack_latency,
)
from bench.nodes import nodes, tree, tree_pss_kb, tree_rss_kb
from bench.service import ServiceUser
from bench.stack import ROOT_DIR, SECTION_TOKENS

GEVENT = [sys.executable, str(ROOT_DIR / "bench" / "gevent_worker.py")]

# (label, node arguments, settings, launcher). Prefork opens each process's own
# database pool: at the pool's defaults (10 + 20 overflow) 32 processes could ask
# PostgreSQL for 960 connections against its default max_connections of 100, so
# its processes get two each, all one process's job needs (its own and the read-ahead's).
CANDIDATES: tuple[tuple[str, list[str], dict[str, str], list[str] | None], ...] = (
    ("threads, 2 processes (the default)", [], {}, None),
    ("threads, 1 process", [], {"WORKER_PROCESSES": "1"}, None),
    ("gevent, 1 process", [], {}, GEVENT),
    ("prefork", ["--pool", "prefork"], {"DB_POOL_SIZE": "1", "DB_MAX_OVERFLOW": "1"}, None),
)


def bench_pools(ctx: Context, clients: int, jobs_per_client: int, rounds: int) -> dict:
    """Every candidate node at `clients` slots, against `clients` direct threads."""
    stack = ctx.stack
    log(f"pools: {len(CANDIDATES)} candidates, {clients} clients at 1 s per upstream call")
    user = ServiceUser.register(stack.api_url, SECTION_TOKENS["pools"])
    direct = ctx.direct(SECTION_TOKENS["pools-direct"])
    engine = database_engine(stack)
    out: dict = {
        "clients": clients,
        "jobs_per_client": jobs_per_client,
        "latency_s": 1.0,
        "candidates": {},
    }
    stack.set_latency(1.0)
    try:
        with stack.main_worker_stopped():
            for k, (label, args, settings, program) in enumerate(CANDIDATES):
                spec = [(f"pool-{k}", [*args, "--concurrency", str(clients)], settings)]
                with nodes(spec, stack.env, stack.scratch, stack.logs_dir, program) as (node,):
                    pid = node.popen.pid
                    idle = {
                        "idle_rss_mb": tree_rss_kb(pid) / 1024,
                        "idle_pss_mb": tree_pss_kb(pid) / 1024,
                        "processes": len(tree(pid)),
                    }
                    log(f"pools: {label}")
                    pair = inflight_pair(
                        stack,
                        user,
                        direct,
                        engine,
                        pid,
                        clients,
                        clients * jobs_per_client,
                        600_000 + 20_000 * k,
                        rounds=rounds,
                    )
                    out["candidates"][label] = idle | pair | {"banner": node_settings(node.log())}
    finally:
        stack.set_latency(stack_latency(stack))
        engine.dispose()
    return out
