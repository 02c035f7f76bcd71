"""Daily and monthly prediction-token pools per account, as the TabPFN cloud meters them.

A predict call costs what the cloud's TabPFN v2.x formula says:
`max(5,000, (train_rows + test_rows) × columns × n_estimators)`, with
`n_estimators` 8 unless the request sets it. A call is refused when its cost does
not fit in what is left of either pool; a refused call costs nothing. The daily
pool resets at midnight UTC, the monthly one on the 1st at midnight UTC.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

TOKEN_FLOOR = 5_000
DEFAULT_N_ESTIMATORS = 8


def predict_cost(
    train_rows: int, test_rows: int, columns: int, n_estimators: int | None = None
) -> int:
    cells = (train_rows + test_rows) * columns * (n_estimators or DEFAULT_N_ESTIMATORS)
    return max(TOKEN_FLOOR, cells)


def next_day(now: datetime) -> datetime:
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def next_month(now: datetime) -> datetime:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


@dataclass(frozen=True)
class PoolEmpty:
    pool: str  # "daily" | "monthly"
    limit: int
    used: int
    cost: int
    reset_at: datetime

    @property
    def message(self) -> str:
        return (
            f"{self.pool.capitalize()} prediction token pool exhausted: {self.used:,} of "
            f"{self.limit:,} tokens used and this request needs {self.cost:,}. "
            f"The {self.pool} pool resets at {self.reset_at.isoformat()}"
        )


@dataclass
class _Usage:
    day: str = ""
    daily: int = 0
    month: str = ""
    monthly: int = 0


@dataclass
class TokenPools:
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _usage: dict[str, _Usage] = field(default_factory=dict)

    def charge(
        self, account: str, cost: int, daily_limit: int, monthly_limit: int, now: datetime
    ) -> PoolEmpty | None:
        """Take `cost` tokens from both pools, or say which pool cannot pay.

        When both are short, the monthly pool is named: it resets later, so
        waiting for the daily reset would not help.
        """
        with self._lock:
            usage = self._rolled(account, now)
            if usage.monthly + cost > monthly_limit:
                return PoolEmpty("monthly", monthly_limit, usage.monthly, cost, next_month(now))
            if usage.daily + cost > daily_limit:
                return PoolEmpty("daily", daily_limit, usage.daily, cost, next_day(now))
            usage.daily += cost
            usage.monthly += cost
            return None

    def usage(self, account: str, daily_limit: int, monthly_limit: int, now: datetime) -> dict:
        with self._lock:
            usage = self._rolled(account, now)
            return {
                "daily": {
                    "used": usage.daily,
                    "limit": daily_limit,
                    "reset_time": next_day(now).isoformat(),
                },
                "monthly": {
                    "used": usage.monthly,
                    "limit": monthly_limit,
                    "reset_time": next_month(now).isoformat(),
                },
            }

    def reset(self) -> None:
        with self._lock:
            self._usage.clear()

    def _rolled(self, account: str, now: datetime) -> _Usage:
        usage = self._usage.setdefault(account, _Usage())
        day, month = now.astimezone(UTC).strftime("%Y-%m-%d"), now.astimezone(UTC).strftime("%Y-%m")
        if usage.day != day:
            usage.day, usage.daily = day, 0
        if usage.month != month:
            usage.month, usage.monthly = month, 0
        return usage
