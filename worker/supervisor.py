"""A worker node's supervisor: what the node's first process becomes once it forked the rest.

worker/node.py imports what jobs need, forks the node's processes from that
warm image, then execs `python -m worker.supervisor`. The node keeps its pid
and its children; what it drops is the warm image itself. Kept, that image
would be counted once more in the node's memory, and hold the original of every
page its processes copy as they run (a Python object's reference count is a
write): ~260 MB of RSS at rest on this project's images, against ~35 MB for this
module, which imports logging and nothing of the jobs' stack.

It:
- reports the node ready once every process is (each writes its index to a pipe);
- forwards SIGTERM, SIGINT and SIGQUIT to every process, and exits when all have;
  a second SIGINT (Ctrl-C again) goes on as SIGQUIT: the processes, which a
  terminal's Ctrl-C reaches directly too, each get a press twice, so they leave
  counting the presses to it (worker/lifecycle.py, listen_for_stop_signals);
- takes SIGHUP (a closed terminal) as SIGTERM, unless started with it ignored
  (`nohup`): by default it would end the supervisor, and with it (pdeathsig)
  every process mid-job;
- replaces a process that dies (OOM killer, kill -9) with a fresh one, which
  warms up before it serves and re-queues the dead one's jobs (worker/lifecycle.py);
- stops the node when a process fails before it was ever ready, soon after its
  start: a bad setting must not restart in a loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass

log = logging.getLogger("worker.node")

# Logged once every process of the node took its place in the queue; what the
# tests and the bench wait for (cli.supervisor.WORKER_READY).
NODE_READY = "worker node ready"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# A process that exits with an error (not a signal) this soon after its start, never
# ready, is a configuration problem, not a crash to recover from.
EARLY_FAILURE_S = 60.0
# The node's processes and pipe, handed from worker/node.py across the exec.
STATE_ENV = "TABPFN_API_NODE_STATE"
# Killed by a signal before ready this many times in a row: the node stops (see _reap).
EARLY_KILLS = 3
# Set for a replacement process: "index,fd" (its number, where it reports ready).
PROCESS_ENV = "TABPFN_API_NODE_PROCESS"


@dataclass
class Plan:
    argvs: list[list[str]]  # each process's Celery arguments, "worker" first
    shares: list[int]  # each process's job slots
    pids: dict[int, int]  # pid -> process index
    started: dict[int, float]  # index -> time.monotonic() at its start
    read_fd: int
    write_fd: int

    def to_json(self) -> dict:
        pairs = {"pids": list(self.pids.items()), "started": list(self.started.items())}
        return {**self.__dict__, **pairs}

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        return cls(
            **{
                **data,
                "pids": {int(pid): int(index) for pid, index in data["pids"]},
                "started": {int(index): float(at) for index, at in data["started"]},
            }
        )


class Supervisor:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.pids = dict(plan.pids)
        self.started = dict(plan.started)
        self.ready: set[int] = set()
        self.stopping = False
        self.interrupted = False
        self.exit_code = 0
        # Per process: how many times in a row it was killed by a signal before ready.
        self.early_kills: dict[int, int] = {}

    def run(self) -> int:
        for sig in FORWARDED:
            signal.signal(sig, self._forward)
        if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # ignored under nohup: kept so
            signal.signal(signal.SIGHUP, self._forward)
        # Blocked since before the fork (worker/node.py): what came meanwhile is delivered now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {*FORWARDED, signal.SIGHUP})
        announced = False
        while self.pids:
            try:
                readable, _, _ = select.select([self.plan.read_fd], [], [], 0.5)
            except InterruptedError:
                readable = []
            if readable:
                for index in os.read(self.plan.read_fd, 256):
                    if announced:
                        log.info("worker node: process %d is back and ready", index + 1)
                    self.ready.add(index)
            if not announced and len(self.ready) == len(self.plan.argvs):
                announced = True
                log.info(
                    "%s: %d processes, %s job slots",
                    NODE_READY,
                    len(self.plan.shares),
                    " + ".join(map(str, self.plan.shares)),
                    extra={"event": "node_ready"},
                )
            self._reap()
        return self.exit_code

    def _start(self, index: int) -> None:
        """A fresh process in place of a dead one: `tabpfn-api worker` with that process's share."""
        from cli.lifeline import die_with_parent

        pdeathsig = die_with_parent(signal.SIGKILL)
        argv = [sys.executable, "-c", "from cli.main import main; main()", *self.plan.argvs[index]]
        env = {**os.environ, PROCESS_ENV: f"{index},{self.plan.write_fd}"}
        env.pop(STATE_ENV, None)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # only calls that take no lock until exec: this process has one thread
            try:
                for sig in FORWARDED:
                    signal.signal(sig, signal.SIG_DFL)
                if pdeathsig is not None:
                    pdeathsig()
                os.close(self.plan.read_fd)
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(127)
        self.pids[pid] = index
        self.started[index] = time.monotonic()
        self.ready.discard(index)

    def _forward(self, sig: int, _frame: object) -> None:
        self.stopping = True
        if sig == signal.SIGINT:
            sig = signal.SIGQUIT if self.interrupted else sig
            self.interrupted = True
        elif sig == signal.SIGHUP:
            sig = signal.SIGTERM
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
            if code < 0 and never_ready and early:
                self.early_kills[index] = self.early_kills.get(index, 0) + 1
            else:
                self.early_kills.pop(index, None)
            if code == 0:
                # Celery's own shutdown (a remote `shutdown` broadcast): not replaced.
                log.info("worker node: process %d (pid %d) exited", index + 1, pid)
            elif never_ready and early and (code > 0 or self.early_kills[index] >= EARLY_KILLS):
                # An exit with an error: a setting or an option no start can get past. A
                # signal once is not (the OOM killer, an operator): replaced, where it
                # stopped the whole node; at every start it is (a memory limit too low
                # to warm up), and the container's restart policy then spaces the tries.
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
                self._start(index)


def main() -> None:
    from shared.core.logging_setup import configure_logging

    configure_logging()
    plan = Plan.from_json(json.loads(os.environ.pop(STATE_ENV)))
    sys.exit(Supervisor(plan).run())


if __name__ == "__main__":
    main()
