"""How fast this machine is right now: two fixed workloads, timed in CPU milliseconds.

The ratios in docs/benchmarks.md move with the machine more than with the code.
The same commit measured 1.07x and 1.16x latency an hour apart, and sessions have
landed on different hosts (AMD EPYC one day, Intel Xeon another), each with
phases in which every process needs up to twice the CPU for the same work. None
of that shows up as other processes' CPU time or as steal time. So every section
of the shared stack is bracketed by this probe, taken while the stack idles
between sections: the CPU time two fixed workloads need. One is interpreter work
that stays in the core's caches; the other looks up keys of a table larger than
them, in random order, and reads slower when neighbours on the host contend for
memory (a process streaming memory on the other core slowed it by 10-25 % here,
and the first not at all). Their milliseconds are comparable across runs and
hosts, and a section whose probe reads slow is one to measure again before
reading its ratio. Over fifteen runs of section 2b in session 20 (one commit, a
host that slowed between them), the interpreter probe correlated with every
process's CPU per job at r = 0.92-0.93 and with the latency the service adds at
0.89; the memory-bound one at about 0.6 (bench/ANALYSIS.md).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

# One run takes about 10 ms of CPU on this project's bench hosts in a quiet phase:
# short enough to take often, long enough to cover many scheduler ticks.
_ITERATIONS = 50_000
_RUNS = 5
_DOCUMENT = {"rows": [[i * 0.5, f"r{i}", None, i % 3 == 0] for i in range(50)], "n": 50}
# About 20 MB of dict and strings: well beyond a core's L2, and most of a shared L3.
_TABLE_SIZE = 200_000
_LOOKUPS = 50_000
_table: dict[int, str] = {}
_order: list[int] = []


def _workload() -> int:
    # Interpreter work of the kind the service does per request: small objects,
    # dicts, JSON text. Deterministic, no I/O, no allocation that grows.
    total = 0
    for i in range(_ITERATIONS):
        total += hash((i, i * i)) & 0xFF
        if i % 400 == 0:
            total += len(json.loads(json.dumps(_DOCUMENT))["rows"])
    return total


def _memory_workload() -> int:
    if not _table:  # built once per process, outside the timing
        _table.update((k, str(k)) for k in range(_TABLE_SIZE))
        _order.extend(random.Random(13).sample(range(_TABLE_SIZE), _LOOKUPS))
    return sum(len(_table[k]) for k in _order)


def _steal_s() -> float:
    """Seconds the hypervisor ran something else while a vCPU of ours was ready (all vCPUs)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    # cpu user nice system idle iowait irq softirq steal ...: ticks of USER_HZ (100).
    return int(fields[8]) / 100 if len(fields) > 8 else 0.0


def _cpu_ms(workload) -> float:
    """A workload's CPU milliseconds, the median of a few runs."""
    workload()  # untimed: the memory workload's table is built, the caches are warm
    spent = []
    for _ in range(_RUNS):
        started = time.thread_time()
        workload()
        spent.append((time.thread_time() - started) * 1000)
    return statistics.median(spent)


def probe() -> dict[str, float]:
    """Both workloads' CPU milliseconds, and the steal counter."""
    return {
        "cpu_ms": _cpu_ms(_workload),
        "memory_ms": _cpu_ms(_memory_workload),
        "steal_s": _steal_s(),
    }


def bracket(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """One section's reading: the probes before and after it, and the steal in between."""
    return {
        "before_ms": before["cpu_ms"],
        "after_ms": after["cpu_ms"],
        "memory_before_ms": before["memory_ms"],
        "memory_after_ms": after["memory_ms"],
        "steal_s": max(0.0, after["steal_s"] - before["steal_s"]),
    }
