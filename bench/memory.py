"""Peak memory of processes, from /proc (Linux): VmHWM, reset between cases."""

from __future__ import annotations

import os
from pathlib import Path


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of `pid`, in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def reset_peak_memory(pid: int) -> bool:
    """Start VmHWM afresh from the current RSS (`5` > clear_refs, Linux ≥ 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def children(pid: int) -> list[int]:
    """Direct children of `pid` (a Celery worker's pool processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int, thread: int | None = None) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name, or one thread's (task/<thread>);
    None once it is gone."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        return Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cpu(fields: list[str] | None) -> float:
    return (int(fields[11]) + int(fields[12])) / _TICKS if fields else 0.0  # utime, stime


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far (0 once it is gone)."""
    return _cpu(_stat(pid))


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time so far of `pid`'s first thread alone (the event loop of an API process,
    Celery's consumer in a worker process); 0 once it is gone."""
    return _cpu(_stat(pid, thread=pid))


def minor_faults(pid: int) -> int:
    """Minor page faults `pid` has taken so far: in a forked process, mostly the first
    write to each page it shares with its parent (copy-on-write); 0 once it is gone."""
    fields = _stat(pid)
    return int(fields[7]) if fields else 0


def cpu_by_process(parts: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """CPU seconds so far of each part of a run, by process id (see `cpu_spent`)."""
    return {part: {p: cpu_seconds(p) for p in pids} for part, pids in parts.items()}


def cpu_spent(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds each part used between two `cpu_by_process` snapshots.

    Kept by process id: a process that ended in between (a PostgreSQL backend
    does) has its CPU dropped rather than subtracted from the others'; one that
    started in between counts whole.
    """
    return {
        part: sum(max(0.0, cpu - before[part].get(pid, 0.0)) for pid, cpu in pids.items())
        for part, pids in after.items()
    }


def pids_named(name: str) -> list[int]:
    """Every process whose command name is `name` (PostgreSQL backends, redis-server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (every core, not idle/iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS
