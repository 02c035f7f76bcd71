"""A worker node: WORKER_PROCESSES Celery worker processes sharing the node's job slots.

Why more than one: a job is almost all upstream wait, so one process holds
dozens of jobs on threads; but one Python process runs Python on one core at a
time, and the Python a job does need (claiming it, decoding its tables, calling
tabpfn-client, shaping and storing its result) comes in waves when many jobs
end together. Several processes let that work use several cores, on a node
whose cores are not all taken by other work.

How:
- The parent imports what jobs need (tabpfn-client, pandas, pyarrow) once and
  then forks, so every process shares those pages (copy-on-write). It opens no
  connection before the fork; each process connects during its own warm-up.
- WORKER_CONCURRENCY (or `--concurrency`) is the node's total: 64 over two
  processes is 32 + 32. Each process is a Celery node of its own, named after
  the node's (`celery-1@host`, `celery-2@host`; `-n name@host` → `name-1@host`).
- SIGTERM, SIGINT and SIGQUIT go to every process (SIGTERM: each drains, see
  worker/lifecycle.py); the parent exits when all have. A process that dies
  (OOM killer, kill -9) is replaced from the warm parent, and the replacement's
  start-up re-queues the dead one's jobs at once (`release_dead_runs`). A
  process that fails before it was ever ready stops the node: a bad setting
  must not restart in a loop.
- The processes die with the parent (PR_SET_PDEATHSIG): a node killed hard is
  killed whole, as before.

WORKER_PROCESSES=1 (the default: on the 2-core machine the project is measured
on, two processes gained nothing, docs/benchmarks.md), `--pool prefork` or
`solo` run one Celery worker in this process, as a plain `celery worker` would.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
import time
import traceback

from cli.lifeline import die_with_parent
from shared.core.config import get_settings

log = logging.getLogger(__name__)

# Logged once every process of the node took its place in the queue; what the
# tests and the bench wait for (cli.supervisor.WORKER_READY).
NODE_READY = "worker node ready"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# A process that exits with an error this soon after its start, never ready, is
# a configuration problem, not a crash to recover from.
EARLY_FAILURE_S = 60.0

# Set in a forked process: where it reports that it is ready (see report_ready).
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


def run_node(argv: list[str]) -> None:
    """`tabpfn-api worker [celery options]`: one process, or a node of several."""
    from worker.tasks import app

    options, rest = _split(argv)
    settings = get_settings()
    total = options.concurrency or settings.worker_concurrency
    shares = _shares(total, settings.worker_processes)
    if options.pool not in (None, "threads") or len(shares) == 1:
        sys.exit(_celery_worker(app, ["worker", *argv]))
    # Before the fork: the processes share these pages instead of each importing them.
    from worker.lifecycle import import_what_jobs_need

    import_what_jobs_need()
    argvs = [
        ["worker", *rest, "--pool", "threads", "--concurrency", str(share)]
        + ["--hostname", _name(options.hostname, i + 1)]
        for i, share in enumerate(shares)
    ]
    sys.exit(_Node(app, argvs, shares).run())


def _celery_worker(app, argv: list[str]) -> int:
    """Run Celery's worker command; a usage error is one line and exit 2, not a traceback."""
    import click

    try:
        app.worker_main(argv=argv)
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


class _Node:
    def __init__(self, app, argvs: list[list[str]], shares: list[int]) -> None:
        self.app = app
        self.argvs = argvs
        self.shares = shares
        self.pids: dict[int, int] = {}  # pid -> process index
        self.started: dict[int, float] = {}  # index -> monotonic start
        self.ready: set[int] = set()
        self.stopping = False
        self.exit_code = 0
        self.read_fd, self.write_fd = os.pipe()
        # Made here, in the parent: it checks that the parent it was made in still lives.
        self.die_with_parent = die_with_parent(signal.SIGKILL)

    def run(self) -> int:
        for sig in FORWARDED:
            signal.signal(sig, self._forward)
        for index in range(len(self.argvs)):
            self._fork(index)
        announced = False
        while self.pids:
            readable, _, _ = select.select([self.read_fd], [], [], 0.5)
            if readable:
                for index in os.read(self.read_fd, 256):
                    if announced:
                        log.info("worker node: process %d is back and ready", index + 1)
                    self.ready.add(index)
            if not announced and len(self.ready) == len(self.argvs):
                announced = True
                log.info(
                    "%s: %d processes, %s job slots",
                    NODE_READY,
                    len(self.shares),
                    " + ".join(map(str, self.shares)),
                    extra={"event": "node_ready"},
                )
            self._reap()
        return self.exit_code

    def _fork(self, index: int) -> None:
        # Whatever is still buffered would otherwise be written twice.
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the new process: never returns
            self._child(index)
        self.pids[pid] = index
        self.started[index] = time.monotonic()
        self.ready.discard(index)

    def _child(self, index: int) -> None:
        global _ready_fd, _index
        code = 1
        try:
            for sig in FORWARDED:
                signal.signal(sig, signal.SIG_DFL)
            if self.die_with_parent is not None:
                self.die_with_parent()
            os.close(self.read_fd)
            _ready_fd, _index = self.write_fd, index
            code = _celery_worker(self.app, self.argvs[index])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            logging.shutdown()
            os._exit(code)

    def _forward(self, sig: int, _frame: object) -> None:
        self.stopping = True
        for pid in list(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.pids.clear()
                return
            if pid == 0:
                return
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            how = f"exit {code}" if code >= 0 else f"signal {-code}"
            if self.stopping:
                log.info("worker node: process %d (pid %d) stopped (%s)", index + 1, pid, how)
                continue
            never_ready = index not in self.ready
            early = time.monotonic() - self.started[index] < EARLY_FAILURE_S
            if code == 0:
                # Celery's own shutdown (a remote `shutdown` broadcast): not replaced.
                log.info("worker node: process %d (pid %d) exited", index + 1, pid)
            elif never_ready and early:
                log.error(
                    "worker node: process %d (pid %d) failed at start-up (%s); stopping the node",
                    index + 1,
                    pid,
                    how,
                )
                self.exit_code = code if code > 0 else 1
                self._forward(signal.SIGTERM, None)
            else:
                log.warning(
                    "worker node: process %d (pid %d) died (%s); starting another",
                    index + 1,
                    pid,
                    how,
                )
                self._fork(index)
