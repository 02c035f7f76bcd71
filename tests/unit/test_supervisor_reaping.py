"""The worker node's supervisor: a process that exits with an error before it is ready
stops the node (a setting no start gets past); one killed by a signal then (the OOM
killer during its warm-up) is replaced. It stopped the node too."""

from __future__ import annotations

import signal
import time

from worker import supervisor
from worker.supervisor import Plan, Supervisor


def _reaped(monkeypatch, status: int) -> tuple[Supervisor, list[int], list[int]]:
    plan = Plan(argvs=[["worker"]], shares=[8], pids={4242: 0}, started={0: time.monotonic()},
                read_fd=-1, write_fd=-1)  # fmt: skip
    node = Supervisor(plan)
    answers = iter([(4242, status), (0, 0)])
    monkeypatch.setattr(supervisor.os, "waitpid", lambda pid, options: next(answers))
    started: list[int] = []
    forwarded: list[int] = []
    monkeypatch.setattr(node, "_start", started.append)
    monkeypatch.setattr(node, "_forward", lambda sig, frame: forwarded.append(sig))
    node._reap()
    return node, started, forwarded


def test_a_process_killed_during_its_warm_up_is_replaced(monkeypatch) -> None:
    node, started, forwarded = _reaped(monkeypatch, int(signal.SIGKILL))  # killed by signal 9
    assert started == [0] and forwarded == [] and node.exit_code == 0


def test_a_process_that_exits_with_an_error_before_it_is_ready_stops_the_node(monkeypatch):
    node, started, forwarded = _reaped(monkeypatch, 2 << 8)  # exit 2: a usage error
    assert started == [] and forwarded == [signal.SIGTERM] and node.exit_code == 2


def test_a_process_killed_at_every_start_stops_the_node_at_the_third(monkeypatch) -> None:
    """Replaced at once for ever, a process OOM-killed at every warm-up looped with no
    pause; stopped, the container's restart policy spaces the tries."""
    plan = Plan(argvs=[["worker"]], shares=[8], pids={}, started={0: time.monotonic()},
                read_fd=-1, write_fd=-1)  # fmt: skip
    node = Supervisor(plan)
    forwarded: list[int] = []
    started: list[int] = []
    monkeypatch.setattr(node, "_start", started.append)
    monkeypatch.setattr(node, "_forward", lambda sig, frame: forwarded.append(sig))
    for pid in (11, 12, 13):
        node.pids[pid] = 0
        answers = iter([(pid, int(signal.SIGKILL)), (0, 0)])
        monkeypatch.setattr(supervisor.os, "waitpid", lambda p, o, a=answers: next(a))
        node._reap()
    assert started == [0, 0] and forwarded == [signal.SIGTERM] and node.exit_code == 1
