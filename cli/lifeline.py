"""Child processes that do not outlive the process that started them.

A parent killed hard (SIGKILL, a CI time-out, the OOM killer) runs no clean-up,
so its servers would keep running, owned by init. Two guards:

- `die_with_parent(sig)`: on Linux the kernel sends the child `sig` when its
  parent dies (prctl PR_SET_PDEATHSIG), set between fork and exec;
- pid files: what a crashed run left behind is found and stopped by the next
  start in the same directory (`stop_leftover`), for systems without prctl or
  a child that escaped the signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_libc = (
    ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None
)


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn that makes the child get `sig` when this process dies (Linux; else None).

    The function only calls prctl: nothing in it takes a lock, which is what
    makes a preexec_fn unsafe in a threaded parent. Note the kernel tracks the
    *thread* that forked: start children from a thread that lives as long as
    they should (the main thread here).
    """
    if _libc is None:
        return None
    prctl = _libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # The parent may have died between fork and prctl: then no signal comes.
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def _command_line(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def stop_leftover(
    pid: int, *, must_mention: str, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> bool:
    """Stop process `pid` if it still runs and its command line mentions `must_mention`.

    The check keeps a recycled pid (now some unrelated program) from being
    killed. Returns True when a leftover was found and stopped.
    """
    if pid <= 1 or pid == os.getpid() or not is_alive(pid):
        return False
    command = _command_line(pid)
    if must_mention not in command:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    return True


def _gone(pid: int) -> bool:
    # Our own child stays a zombie until reaped; another's until init reaps it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return not is_alive(pid) or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def read_pid(path: Path) -> int | None:
    """The pid on the first line of a pid file, or None when absent or unreadable."""
    try:
        first = path.read_text().splitlines()[0].strip()
        return int(first)
    except (OSError, IndexError, ValueError):
        return None
