"""What the emulator spent: its process CPU and its calls by kind and status.

Benchmarks read `GET /_emulator/stats` before and after a run and report the
emulator's CPU per job beside the service's, so a ratio never hides that the
stand-in upstream shared the machine. Counters are cheap (no call log lookup).
"""

from __future__ import annotations

import resource
import threading
import time
from collections import Counter
from typing import Any

# Which calls are which kind; the rate windows use the same names for the first three.
PATH_KINDS = {
    "/tabpfn/fit": "fit",
    "/tabpfn/submit_fit_job": "fit",
    "/tabpfn/predict": "predict",
    "/tabpfn/prepare_train_set_upload": "upload",
    "/tabpfn/prepare_test_set_upload": "upload",
    "/tabpfn/get_fit_status": "fit_status",
}


def path_kind(path: str, storage_prefix: str) -> str:
    if path.startswith(storage_prefix):
        return "storage_put"
    return PATH_KINDS.get(path, "other")


class CallStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._throttled: Counter[str] = Counter()
        self._started = time.monotonic()

    def count(self, kind: str, status: int) -> None:
        with self._lock:
            self._calls[kind] += 1
            if status == 429:
                self._throttled[kind] += 1

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._throttled.clear()

    def snapshot(self) -> dict[str, Any]:
        # RUSAGE_SELF covers every thread of the process (background fits included).
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with self._lock:
            calls, throttled = dict(self._calls), dict(self._throttled)
        return {
            "cpu_s": round(time.process_time(), 6),
            "cpu_user_s": round(usage.ru_utime, 6),
            "cpu_system_s": round(usage.ru_stime, 6),
            "max_rss_kib": usage.ru_maxrss,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "calls": calls,
            "http_429": throttled,
        }
