"""A worker node: WORKER_PROCESSES Celery worker processes sharing the node's job slots.

Why more than one: a job is almost all upstream wait, so one process holds
dozens of jobs on threads; but one Python process runs Python on one core at a
time, and the Python a job does need (claiming it, decoding its tables, calling
tabpfn-client, shaping and storing its result) comes in waves when many jobs
end together. Two processes let that work use two cores: at 64 jobs in flight
on the 2-core machine the project is measured on, 0.76–0.85× the direct
client's throughput against 0.72–0.86× for one in the same runs; two won seven
of eleven pairs, and never lost by more than 0.02 (docs/scheduling.md).

How:
- The node's first process imports what jobs need (tabpfn-client, pandas,
  pyarrow) once and then forks, so every process starts sharing those pages
  (copy-on-write). It opens no connection before the fork; each process
  connects during its own warm-up.
- Then it replaces itself (exec) with a small supervisor, worker/supervisor.py
  (~35 MB instead of ~260): a parent that stayed the warm image would keep
  every page its processes later copy, and be counted once more in the node's
  memory. Its pid stays the node's pid.
- WORKER_CONCURRENCY (or `--concurrency`) is the node's total: 64 over two
  processes is 32 + 32. Each process is a Celery node of its own, named after
  the node's (`celery-1@host`, `celery-2@host`; `-n name@host` → `name-1@host`).
- The supervisor forwards SIGTERM, SIGINT, SIGQUIT and SIGHUP to every process
  (SIGTERM, Ctrl-C and SIGHUP: each drains; SIGQUIT or Ctrl-C again: each hands
  its jobs back at once; see worker/lifecycle.py) and exits when all have. A
  process that dies (OOM killer, kill -9) is replaced by a fresh one, whose
  start-up re-queues the dead one's jobs (`release_dead_runs`) once it is warm.
  A process that fails before it was ever ready stops the node: a bad setting
  must not restart in a loop.
- The processes die with the node (PR_SET_PDEATHSIG): a node killed hard is
  killed whole.

WORKER_PROCESSES defaults to two, or one on a node with a single usable core.
With one, `--pool prefork` or `solo`, this process runs one Celery worker, as a
plain `celery worker` would.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import traceback

from cli.lifeline import die_with_parent
from shared.core.config import get_settings
from shared.core.heap import freeze_start_up_heap
from worker.lifecycle import STOP_SIGNALS, listen_for_stop_signals
from worker.supervisor import (
    FORWARDED,
    NODE_READY,
    PROCESS_ENV,
    STATE_ENV,
    Plan,
)

log = logging.getLogger(__name__)

# Set in a node's process: where it reports that it is ready (see report_ready).
_ready_fd: int | None = None
_index = 0


def report_ready(slots: int) -> None:
    """Called when this process's Celery worker is ready (worker/lifecycle.py)."""
    if _ready_fd is None:
        log.info("%s: 1 process, %d job slots", NODE_READY, slots, extra={"event": "node_ready"})
        return
    os.write(_ready_fd, bytes([_index]))


def _split(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The options the node divides (slots, name, pool) and the rest, passed on as given."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-c", "--concurrency", type=int)
    parser.add_argument("-n", "--hostname")
    parser.add_argument("-P", "--pool")
    return parser.parse_known_args(argv)


def _shares(total: int, processes: int) -> list[int]:
    """`total` slots over at most `processes` processes, as evenly as they go."""
    processes = max(1, min(processes, total))
    return [total // processes + (1 if i < total % processes else 0) for i in range(processes)]


def _name(hostname: str | None, number: int) -> str:
    name, _, host = (hostname or "celery@%h").partition("@")
    return f"{name}-{number}@{host or '%h'}"


def _unpatched_green_pool(pool: str | None) -> bool:
    """gevent or eventlet asked for in a process nobody monkey-patched.

    Celery's own `celery` command patches the process for these pools; this one does
    not. Unpatched, every socket read and every psycopg2 query blocks the whole
    process, so its slots would run one job at a time. A launcher that patches first
    (bench/gevent_worker.py) may run them.
    """
    if pool == "gevent":
        monkey = sys.modules.get("gevent.monkey")
        return monkey is None or not monkey.is_module_patched("socket")
    if pool == "eventlet":
        patcher = sys.modules.get("eventlet.patcher")
        return patcher is None or not patcher.is_monkey_patched("socket")
    return False


def default_processes() -> int:
    """Two, or one where this process may use a single core only (affinity, cpusets)."""
    return min(2, len(os.sched_getaffinity(0)))


def run_node(argv: list[str]) -> None:
    """`tabpfn-api worker [celery options]`: one process, or a node of several."""
    # Before worker.tasks: its imports start native threads (numpy's BLAS), which
    # inherit this mask. One of them taking SIGTERM, Ctrl-C, SIGQUIT or SIGHUP would
    # hand it to Celery's handler, not to listen_for_stop_signals. A pool other than
    # threads takes them back below.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    from worker.tasks import app

    replacing = os.environ.pop(PROCESS_ENV, None)
    if replacing is not None:  # started by the node's supervisor in place of a dead process
        global _ready_fd, _index
        index, fd = replacing.split(",")
        _index, _ready_fd = int(index), int(fd)
        listen_for_stop_signals(supervised=True)
        sys.exit(_celery_worker(app, ["worker", *argv]))
    options, rest = _split(argv)
    if _unpatched_green_pool(options.pool):
        print(
            f"tabpfn-api worker: --pool {options.pool} needs the process monkey-patched "
            "before it imports anything, which tabpfn-api worker does not do; use the "
            "threads pool (the default) or --pool prefork (docs/operations.md)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    settings = get_settings()
    total = options.concurrency or settings.worker_concurrency
    shares = _shares(total, settings.worker_processes or default_processes())
    if options.pool not in (None, "threads") or len(shares) == 1:
        if options.pool:
            # Celery's --pool reads "prefork", its own default, as "the configured pool"
            # (worker_pool: threads here), so `--pool prefork` alone ran threads.
            app.conf.worker_pool = options.pool
        if options.pool in (None, "threads"):
            listen_for_stop_signals(supervised=False)
        else:  # Celery's own shutdown, which can end the tasks of these pools
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        sys.exit(_celery_worker(app, ["worker", *argv]))
    # Before the fork: the processes share these pages instead of each importing them.
    from worker.lifecycle import import_what_jobs_need

    import_what_jobs_need()
    argvs = [
        ["worker", *rest, "--pool", "threads", "--concurrency", str(share)]
        + ["--hostname", _name(options.hostname, i + 1)]
        for i, share in enumerate(shares)
    ]
    _fork_and_supervise(app, argvs, shares)


def _fork_and_supervise(app, argvs: list[list[str]], shares: list[int]) -> None:
    """Fork the node's processes from this warm one, then become their supervisor."""
    read_fd, write_fd = os.pipe()
    # Made here, in the parent: it checks that the parent it was made in still lives.
    pdeathsig = die_with_parent(signal.SIGKILL)
    # A signal that comes before the supervisor's handlers stays pending (the mask
    # and pending signals survive exec) and is forwarded once it runs.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    # The garbage collector writes to every object it examines, and so would copy
    # each shared page into the process that runs it: what exists now (the imported
    # modules, mostly) is left out of its collections from here on.
    freeze_start_up_heap()
    pids = {}
    for index in range(len(argvs)):
        # Whatever is still buffered would otherwise be written twice.
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the new process: never returns
            _child(app, argvs[index], index, read_fd, write_fd, pdeathsig)
        pids[pid] = index
    plan = Plan(
        argvs=argvs,
        shares=shares,
        pids=pids,
        started={index: time.monotonic() for index in pids.values()},
        read_fd=read_fd,
        write_fd=write_fd,
    )
    os.set_inheritable(read_fd, True)
    os.set_inheritable(write_fd, True)
    os.environ[STATE_ENV] = json.dumps(plan.to_json())
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, "-m", "worker.supervisor"])


def _child(app, argv: list[str], index: int, read_fd: int, write_fd: int, pdeathsig) -> None:
    global _ready_fd, _index
    code = 1
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        # STOP_SIGNALS (FORWARDED among them) stay blocked, since run_node began.
        listen_for_stop_signals(supervised=True)
        if pdeathsig is not None:
            pdeathsig()
        os.close(read_fd)
        _ready_fd, _index = write_fd, index
        code = _celery_worker(app, argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        os._exit(code)


def _celery_worker(app, argv: list[str]) -> int:
    """Run Celery's worker command; a usage error is one line and exit 2, not a traceback."""
    import click

    try:
        app.worker_main(argv=argv)
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0
