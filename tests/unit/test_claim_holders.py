"""A claim names its process with the process's start time, so a pid reused by a
restarted container's new process no longer reads as the dead holder alive (its jobs
waited for the lease instead of running again within seconds)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from shared.jobs.lifecycle import parse_holder, pid_namespace, process_start, this_worker
from worker.heartbeat import holder_is_dead


def test_this_process_holds_its_claims_alive() -> None:
    holder = this_worker()
    assert parse_holder(holder) == (
        socket.gethostname(),
        os.getpid(),
        process_start(os.getpid()),
        pid_namespace(),
    )
    assert not holder_is_dead(holder)


def test_a_pid_now_used_by_a_process_that_started_at_another_time_is_gone() -> None:
    host, pid, ns = socket.gethostname(), os.getpid(), pid_namespace()
    assert holder_is_dead(f"{host}:{pid}:{process_start(pid) - 1}:{ns}")
    # The same hostname in another pid namespace (host networking): not ours to judge.
    assert not holder_is_dead(f"{host}:{pid}:{process_start(pid) - 1}:{ns + 1}")
    # A holder an older release wrote (no start time): alive while its pid is, the safe side.
    assert not holder_is_dead(f"{host}:{pid}")


def test_an_ended_process_or_another_hosts_holder() -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert holder_is_dead(f"{socket.gethostname()}:{ended.stdout.strip()}:1:{pid_namespace()}")
    assert not holder_is_dead(f"another-host-{os.getpid()}:1:1")
    assert parse_holder("host:12:x:1") is None and parse_holder(None) is None
    assert parse_holder("host:12:5") is None  # a start without its namespace
