"""worker.lifecycle.start_threads: a thread pool's threads started before its first task.

concurrent.futures starts one thread per submit that finds none idle; started
ahead, a burst of first tasks finds them all waiting (docs/scheduling.md).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from worker.lifecycle import start_threads


def test_every_thread_is_started_and_a_burst_then_starts_none():
    executor = ThreadPoolExecutor(max_workers=8)
    try:
        assert start_threads(executor, 8) == 8
        threads = set(executor._threads)
        assert all(t.is_alive() for t in threads)

        # Eight tasks at once, each waiting for all the others: they need eight
        # threads, and find the ones already there.
        barrier = threading.Barrier(8)
        futures = [executor.submit(barrier.wait, 10) for _ in range(8)]
        assert all(f.result(timeout=10) is not None for f in futures)
        assert set(executor._threads) == threads
    finally:
        executor.shutdown()


def test_without_it_the_burst_starts_its_threads_itself():
    """The control: the same burst on a fresh pool starts a thread per task."""
    executor = ThreadPoolExecutor(max_workers=8)
    try:
        assert len(executor._threads) == 0
        barrier = threading.Barrier(8)
        futures = [executor.submit(barrier.wait, 10) for _ in range(8)]
        for f in futures:
            f.result(timeout=10)
        assert len(executor._threads) == 8
    finally:
        executor.shutdown()
