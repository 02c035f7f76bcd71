"""Per-token request rate windows, as the TabPFN cloud publishes them per user.

Fixed windows, one counter per account, request kind and window. A window opens
with the first request after the previous one ended and lasts `scale × 60` s
(minute) or `scale × 3600` s (hour), as a Redis INCR + EXPIRE limiter does: it
never slides and is never shared between tokens. Or, `on_the_clock`, windows
are the whole window lengths since the epoch (a counter per clock minute).
A request is admitted only while every window of its kind has room, and only
admitted requests count: a refused one spends nothing. Refused, the caller
learns which window is full and how many seconds remain until it ends, which
becomes the 429's `Retry-After`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

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
        # (account, kind, window) -> (when the window opened, requests admitted in it)
        self._counts: dict[tuple[str, str, str], tuple[float, int]] = {}

    def admit(
        self,
        account: str,
        kind: str,
        limits: dict[str, int],
        scale: float,
        now: float,
        *,
        on_the_clock: bool = False,
    ) -> WindowFull | None:
        """Count one request of `kind`, or say which window is full (the later-ending one)."""
        with self._lock:
            seen: list[tuple[tuple[str, str, str], float, int]] = []
            full: list[WindowFull] = []
            for window, base_s in WINDOWS.items():
                length = base_s * scale
                key = (account, kind, window)
                start = math.floor(now / length) * length if on_the_clock else now
                opened, count = self._counts.get(key, (start, 0))
                if now >= opened + length:
                    opened, count = start, 0
                if count >= limits[window]:
                    full.append(WindowFull(kind, window, limits[window], opened + length - now))
                seen.append((key, opened, count))
            if full:
                # Every full window must reopen before a retry can pass. On a tie
                # name the longer window: it is the one that was spent.
                return max(full, key=lambda f: (f.retry_after_s, WINDOWS[f.window]))
            for key, opened, count in seen:
                self._counts[key] = (opened, count + 1)
            return None

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
