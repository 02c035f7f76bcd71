"""Worker nodes a section starts and stops itself, and what one node costs.

The sections of issues 13/14 need workers the main stack's worker is not: a
node started exactly as docker-compose starts it (`tabpfn-api worker`, no
flags), two nodes side by side, a fresh node for the cold start. While one of
them runs, the main worker is stopped (PostgreSQL decides who runs next, so any
live node would claim the section's jobs) and started again afterwards.

What a node costs is read from /proc and from the servers themselves: the
resident memory of its process tree, and its PostgreSQL and Redis connections
found by the local TCP ports its sockets are bound to (pg_stat_activity's
client_port, Redis CLIENT LIST's addr), so nothing needs the worker's help.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path

from bench.memory import memory_kb
from cli.supervisor import BIN, WORKER_READY, Child, start_command, wait_for_line


@contextmanager
def nodes(
    specs: list[tuple[str, list[str], dict[str, str]]],
    env: dict[str, str],
    scratch: Path,
    keep_logs: Path | None = None,
    program: list[str] | None = None,
):
    """Start every (name, args, settings) node, wait until all are ready, stop them after.

    Each is `tabpfn-api worker *args`, or `program *args` (a launcher that runs the
    worker, bench/gevent_worker.py), with `settings` over `env`, in `scratch` (as
    start_in runs it). With `keep_logs`, each node's log is copied there
    (name-<pid>.log) once it stopped.
    """
    command = program or [str(BIN), "worker"]
    started: list[Child] = []
    try:
        for name, args, settings in specs:
            argv, node_env = [*command, *args], {**env, **settings}
            started.append(start_command(name, argv, node_env, scratch, cwd=scratch))
        for node in started:
            # After lifecycle's warm-up.
            wait_for_line(node, WORKER_READY)
        yield started
    finally:
        for node in started:
            node.stop(timeout=40)
            if keep_logs is not None:
                (keep_logs / f"{node.name}-{node.pid}.log").write_text(node.log())


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a prefork pool's children; a threads pool has none)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def tree_rss_kb(pid: int) -> int:
    total = 0
    for p in tree(pid):
        with suppress(OSError, KeyError):
            total += memory_kb(p)["VmRSS"]
    return total


def tree_pss_kb(pid: int) -> int:
    """The tree's proportional set size: a page shared by n processes counts 1/n in each.

    A node's processes are forked from one warm parent and share its pages
    (copy-on-write), which a sum of RSS counts once per process; PSS counts each
    page once, as the kernel's memory accounting of a container does.
    """
    total = 0
    for p in tree(pid):
        with suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
    return total


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def local_ports(pids: list[int], remote_port: int) -> set[int]:
    """Local TCP ports of the sockets `pids` hold to `remote_port` (IPv4 and IPv6)."""
    inodes = set().union(*(_socket_inodes(p) for p in pids)) if pids else set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], int(fields[9])
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def connections(pid: int, database_url: str, redis_url: str) -> dict:
    """The node's PostgreSQL backends (pg_stat_activity) and Redis clients (CLIENT LIST)."""
    import redis
    from sqlalchemy import create_engine, make_url, text

    from shared.core.redis_client import redis_py_url

    pids = tree(pid)
    pg_port = make_url(database_url).port or 5432
    redis_port = redis.connection.parse_url(redis_py_url(redis_url)).get("port", 6379)
    pg_ports, redis_ports = local_ports(pids, pg_port), local_ports(pids, redis_port)
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT client_port, state FROM pg_stat_activity WHERE client_port IS NOT NULL")
        ).all()
    engine.dispose()
    pg = [state for port, state in rows if port in pg_ports]
    client = redis.Redis.from_url(redis_py_url(redis_url))
    redis_clients = [
        c for c in client.client_list() if int(c["addr"].rsplit(":", 1)[1]) in redis_ports
    ]
    client.close()
    return {
        "postgres": len(pg),
        "postgres_active": sum(1 for s in pg if s == "active"),
        "redis": len(redis_clients),
        "redis_names": sorted({c.get("name") or "" for c in redis_clients}),
    }


class Sampler:
    """Peaks of some probes, sampled in a thread while a run goes on.

    `probes` maps a name to a function returning a number; `at_peak_of` names
    the probe whose new maxima trigger `snapshot` (e.g. connections when the
    most jobs are in flight), kept as `at_peak`. `sparse` names probes read only
    every that many ticks: costly ones, which would otherwise load the machine
    under test during one side's runs only.
    """

    def __init__(
        self,
        probes: dict[str, Callable[[], float]],
        *,
        at_peak_of: str | None = None,
        snapshot: Callable[[], dict] | None = None,
        every_s: float = 0.2,
        sparse: dict[str, int] | None = None,
    ) -> None:
        self.probes, self.every_s, self.sparse = probes, every_s, sparse or {}
        self.at_peak_of, self.snapshot = at_peak_of, snapshot
        self.peak: dict[str, float] = dict.fromkeys(probes, 0.0)
        self.at_peak: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            for name, probe in self.probes.items():
                if tick % self.sparse.get(name, 1):
                    continue
                try:
                    value = probe()
                except Exception:  # a probe racing a process exit: skip this sample
                    continue
                if value > self.peak[name]:
                    self.peak[name] = value
                    if name == self.at_peak_of and self.snapshot is not None:
                        with suppress(Exception):
                            self.at_peak = {name: value, **self.snapshot()}
            tick += 1
            self._stop.wait(self.every_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
