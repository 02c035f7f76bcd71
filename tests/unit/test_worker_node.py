"""How a worker node divides its slots and names its processes (worker/node.py)."""

from __future__ import annotations

import pytest

from worker.node import _name, _shares, _split


@pytest.mark.parametrize(
    ("total", "processes", "shares"),
    [
        (64, 2, [32, 32]),
        (65, 2, [33, 32]),
        (8, 3, [3, 3, 2]),
        (1, 2, [1]),  # one slot: one process, never an idle one
        (2, 4, [1, 1]),
        (16, 1, [16]),
    ],
)
def test_the_nodes_slots_are_shared_evenly_and_never_leave_a_process_without_one(
    total, processes, shares
):
    assert _shares(total, processes) == shares
    assert sum(shares) == total


def test_each_process_is_a_celery_node_named_after_the_nodes_name():
    assert _name(None, 1) == "celery-1@%h"
    assert _name("wide-1@%h", 2) == "wide-1-2@%h"
    assert _name("bench@vm", 1) == "bench-1@vm"
    assert _name("solo", 3) == "solo-3@%h"


def test_the_options_the_node_divides_are_taken_out_and_the_rest_passed_on():
    options, rest = _split(
        ["--loglevel", "INFO", "-c", "16", "--without-gossip", "-n", "a@b", "-Q", "q"]
    )
    assert (options.concurrency, options.hostname, options.pool) == (16, "a@b", None)
    assert rest == ["--loglevel", "INFO", "--without-gossip", "-Q", "q"]
    options, rest = _split(["--concurrency=4", "--pool=prefork"])
    assert (options.concurrency, options.pool, rest) == (4, "prefork", [])
