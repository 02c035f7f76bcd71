"""Each TabPFN token's upstream budget, shared by every worker node through Redis.

The TabPFN cloud limits each user per fixed window (a minute and an hour) and
per kind of call (fits, predictions, uploads), answering 429 past a limit. A
job reserves the calls it will make before it is claimed: all of them or none,
in one atomic Lua script, so two nodes can never both spend a token's last
call. A job that gets no budget stays queued and holds no worker slot; the
answer says until when (the end of the fullest window).

Keys hold a keyed hash of the token (`token_fingerprint`), never the token:
everything sent with one token shares one budget, whichever user sent it.
Windows are aligned to the epoch, as fixed windows are; an upstream whose
windows start elsewhere may still answer 429 now and then, which the worker
treats as a wait (see worker.runner), not as a failure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.core.config import get_settings
from shared.core.redis_client import get_redis

PREFIX = "tabpfn-api:pace"

# KEYS: one counter per (kind, window). ARGV: now, then per key: window seconds,
# limit, calls wanted. Returns 0 (reserved), or the epoch second at which the
# last full window ends (nothing reserved).
_RESERVE = """
local now = tonumber(ARGV[1])
local blocked_until = 0
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i])
  local wanted = tonumber(ARGV[3 * i + 1])
  local used = tonumber(redis.call('GET', key) or '0')
  if used + wanted > limit then
    local ends = (math.floor(now / window) + 1) * window
    if ends > blocked_until then blocked_until = ends end
  end
end
if blocked_until > 0 then return tostring(blocked_until) end
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[3 * i - 1])
  local wanted = tonumber(ARGV[3 * i + 1])
  if wanted > 0 then
    redis.call('INCRBY', key, wanted)
    redis.call('EXPIRE', key, math.ceil(window) + 5)
  end
end
return 0
"""


@dataclass(frozen=True)
class WindowUse:
    kind: str
    window: str  # "minute" or "hour", whatever UPSTREAM_RATE_WINDOW_SCALE makes of them
    window_s: float
    limit: int
    used: int
    resets_at: datetime


def calls_for(job_type: str) -> dict[str, int]:
    """The upstream calls a job makes: each fit and each prediction uploads its data once."""
    if job_type == "fit":
        return {"fit": 1, "upload": 1}
    if job_type == "predict":
        return {"predict": 1, "upload": 1}
    return {"fit": 1, "predict": 1, "upload": 2}


def _window_start(now: float, window_s: float) -> int:
    return int(now // window_s)


def _key(fingerprint: str, kind: str, window_s: float, now: float) -> str:
    return f"{PREFIX}:{fingerprint}:{kind}:{window_s:g}:{_window_start(now, window_s)}"


def reserve(
    fingerprint: str, calls: Mapping[str, int], *, now: float | None = None
) -> datetime | None:
    """Reserve `calls` from the token's budget; None when reserved, else when to try again."""
    now = time.time() if now is None else now
    limits = get_settings().rate_limits()
    keys: list[str] = []
    argv: list[float] = [now]
    for kind, wanted in calls.items():
        for window_s, limit in limits[kind]:
            keys.append(_key(fingerprint, kind, window_s, now))
            argv += [window_s, limit, wanted]
    answer = get_redis().eval(_RESERVE, len(keys), *keys, *argv)
    until = float(answer)
    return None if until == 0 else datetime.fromtimestamp(until, UTC)


def refund(fingerprint: str, calls: Mapping[str, int], *, reserved_at: float) -> None:
    """Give back a reservation that was not used (the claim it was for did not happen)."""
    pipe = get_redis().pipeline()
    for kind, wanted in calls.items():
        for window_s, _ in get_settings().rate_limits()[kind]:
            if _window_start(reserved_at, window_s) == _window_start(time.time(), window_s):
                pipe.decrby(_key(fingerprint, kind, window_s, reserved_at), wanted)
    pipe.execute()


def exhaust(fingerprint: str, until: datetime) -> None:
    """The upstream said 429 for a window: count the current windows as full.

    (The scheduler also pauses the token's users in Postgres until `until`; this
    keeps jobs of other users with the same token from trying before then.)
    """
    now = time.time()
    pipe = get_redis().pipeline()
    for each, windows in get_settings().rate_limits().items():
        window_s, limit = windows[0]
        if until.timestamp() <= (_window_start(now, window_s) + 1) * window_s:
            pipe.set(_key(fingerprint, each, window_s, now), limit, ex=int(window_s) + 5)
    pipe.execute()


def window_use(fingerprint: str, *, now: float | None = None) -> list[WindowUse]:
    """The token's budgets in the current windows, for GET /usage."""
    now = time.time() if now is None else now
    limits = get_settings().rate_limits()
    # Settings.rate_limits lists each kind's windows as (minute, hour).
    entries = [
        (kind, name, window_s, limit)
        for kind, windows in limits.items()
        for name, (window_s, limit) in zip(("minute", "hour"), windows, strict=True)
    ]
    used = get_redis().mget([_key(fingerprint, k, w, now) for k, _, w, _ in entries])
    return [
        WindowUse(
            kind=kind,
            window=name,
            window_s=window_s,
            limit=limit,
            used=min(limit, int(count or 0)),
            resets_at=datetime.fromtimestamp((_window_start(now, window_s) + 1) * window_s, UTC),
        )
        for (kind, name, window_s, limit), count in zip(entries, used, strict=True)
    ]
