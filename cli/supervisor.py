"""Child processes: started with a log file, waited for until ready, stopped in order.

The one place that runs the service's own commands as children: `tabpfn-api
dev` (cli/dev.py), the test suite's stacks (tests/support/) and the benchmarks
(bench/). A child is a `tabpfn-api` subcommand, exactly as a deployment runs
it, in a session and process group of its own with all its output in one log
file. It is ready when a URL answers 200 or when its log shows a line; one
that exits first fails with the end of its log. Stopping sends SIGTERM (the
graceful stop of uvicorn and Celery) to every child, waits one grace period,
then kills each child's whole process group, so no pool process outlives it.

Children die with the process that started them even when that one is killed
hard (`cli.lifeline.die_with_parent`), and a pid file lets the next start in
the same place stop what a crashed run left behind (`stop_leftovers`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from cli.lifeline import die_with_parent, stop_leftover

# The console script beside this interpreter: children are the commands a
# deployment runs, and show up as such in `ps`.
BIN = Path(sys.executable).parent / "tabpfn-api"
# A worker node's line once every one of its processes is ready (worker/node.py).
WORKER_READY = "worker node ready"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 3000


class ChildFailed(RuntimeError):
    """A child exited early or never became ready; the message says which, with its log."""


@dataclass
class Child:
    """A process we started (or, for an embedded server, watch): its name, process and log."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def failure(self, what: str) -> ChildFailed:
        tail = self.log()[-LOG_TAIL_CHARS:]
        return ChildFailed(f"{self.name} {what}; end of {self.log_path}:\n{tail}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        stop_all([self], timeout)


def start(
    name: str, args: list[str], env: dict[str, str], log_dir: Path, *, cwd: Path | None = None
) -> Child:
    """Run `tabpfn-api *args` as child `name`, its output in `log_dir/name.log`."""
    return start_command(name, [str(BIN), *args], env, log_dir, cwd=cwd)


def start_command(
    name: str, argv: list[str], env: dict[str, str], log_dir: Path, *, cwd: Path | None = None
) -> Child:
    """Run `argv` as child `name`, its output in `log_dir/name.log` (what `start` does for
    `tabpfn-api`, for another program)."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
            # Own session and process group: a Ctrl-C in the terminal reaches only
            # the parent, which stops the children in order, and a group kill
            # also takes their children. SIGTERM (their graceful stop) if the
            # parent dies without stopping them.
            start_new_session=True, preexec_fn=die_with_parent(),
        )  # fmt: skip
    return Child(name, popen, log_path)


def check_alive(*watched: Child) -> None:
    """Raise ChildFailed, with its log, for the first watched child that has exited."""
    for child in watched:
        code = child.popen.poll()
        if code is not None:
            how = f"exit {code}" if code >= 0 else f"killed by signal {-code}"
            raise child.failure(f"exited unexpectedly ({how})")


def wait_for_http(url: str, *watched: Child, timeout: float = READY_TIMEOUT_S) -> None:
    """Return once `url` answers 200; fail at once if a watched child exits meanwhile."""
    deadline = time.monotonic() + timeout
    answer = "no answer"
    while time.monotonic() < deadline:
        check_alive(*watched)
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            answer = f"HTTP {response.status_code}: {response.text[:300]}"
        except httpx.TransportError as exc:
            answer = type(exc).__name__
        time.sleep(0.1)
    raise ChildFailed(f"{url} not ready after {timeout:.0f}s (last: {answer})")


def wait_for_line(child: Child, text: str, timeout: float = READY_TIMEOUT_S) -> float:
    """Return once a line of the child's log contains `text`; the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        check_alive(child)
        if any(text in line for line in child.log().splitlines()):
            return time.monotonic() - started
        time.sleep(0.05)
    raise child.failure(f"did not log {text!r} in {timeout:.0f}s")


def stop_all(children: Sequence[Child], timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the children, last started first, within one grace period of `timeout`."""
    ordered = list(reversed(children))
    # SIGTERM to all first so they shut down in parallel (Celery's warm
    # shutdown, uvicorn's graceful one), then wait for each.
    for child in ordered:
        if child.alive():
            child.popen.terminate()
    deadline = time.monotonic() + timeout
    for child in ordered:
        try:
            child.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{child.name} did not stop in time; killing it.", file=sys.stderr, flush=True)
        # The leader may be gone while its group is not (a Celery pool process
        # whose parent was killed): the group goes with it.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.popen.wait()


def write_pid_file(path: Path, children: Sequence[Child]) -> None:
    """Record the children's pids for `stop_leftovers`, should this process crash."""
    path.write_text("".join(f"{child.pid} {child.name}\n" for child in children))


def stop_leftovers(path: Path) -> list[tuple[str, int]]:
    """Stop the children a crashed run recorded in `path`; (name, pid) of each one stopped."""
    stopped = []
    for line in path.read_text().splitlines() if path.exists() else []:
        pid, _, name = line.partition(" ")
        # Only our own commands: the pid may have been reused by anything since.
        if pid.isdigit() and stop_leftover(int(pid), must_mention=str(BIN)):
            stopped.append((name, int(pid)))
            # Its own children (Celery's pool) share its process group.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
    path.unlink(missing_ok=True)
    return stopped
