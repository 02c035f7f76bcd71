"""Per-token request rate windows, as the TabPFN cloud publishes them per user.

Fixed windows aligned to the clock (a minute window starts at every whole minute
of `scale × 60` s since the epoch), one counter per account, request kind and
window. A request is admitted only while every window of its kind has room, and
only admitted requests count: a refused one spends nothing. Refused, the caller
learns which window is full and how many seconds remain until it ends, which
becomes the 429's `Retry-After`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

# The cloud's request kinds; which call is which lives in app.py (RATED_PATHS).
KINDS = ("fit", "predict", "upload")
# Window lengths in seconds before scaling.
WINDOWS = {"minute": 60.0, "hour": 3600.0}


@dataclass(frozen=True)
class WindowFull:
    kind: str
    window: str
    limit: int
    retry_after_s: float

    @property
    def retry_after_header(self) -> int:
        """Whole seconds, rounded up: a client that waits this long finds the window open."""
        return max(1, math.ceil(self.retry_after_s))


class RateWindows:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (account, kind, window) -> (index of the window, requests admitted in it)
        self._counts: dict[tuple[str, str, str], tuple[int, int]] = {}

    def admit(
        self, account: str, kind: str, limits: dict[str, int], scale: float, now: float
    ) -> WindowFull | None:
        """Count one request of `kind`, or say which window is full (the later-ending one)."""
        with self._lock:
            seen: list[tuple[tuple[str, str, str], int, int]] = []
            full: list[WindowFull] = []
            for window, base_s in WINDOWS.items():
                length = base_s * scale
                index = math.floor(now / length)
                key = (account, kind, window)
                counted_index, count = self._counts.get(key, (index, 0))
                if counted_index != index:
                    count = 0
                if count >= limits[window]:
                    full.append(
                        WindowFull(kind, window, limits[window], (index + 1) * length - now)
                    )
                seen.append((key, index, count))
            if full:
                # Both windows must reopen before a retry can pass.
                return max(full, key=lambda f: f.retry_after_s)
            for key, index, count in seen:
                self._counts[key] = (index, count + 1)
            return None

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
