"""Each TabPFN token's upstream budget, shared by every worker node through Redis.

The TabPFN cloud limits each user per fixed window (a minute and an hour) and
per kind of call (fits, predictions, uploads), answering 429 past a limit. A
job reserves the calls it will make before it is claimed: all of them or none,
in one atomic Lua script, so two nodes can never both spend a token's last
call. A job that gets no budget stays queued and holds no worker slot; the
answer says until when (the moment enough of the token's earlier calls have
left the window).

The budget is a sliding log: each reserved call is an entry in one sorted set
per (token, kind), scored by the time it was reserved, and a window's use is
the entries younger than its length. A fixed window may open anywhere: on the
minute, or at the first request after the previous one ended (as an INCR +
EXPIRE limiter does, and the project's emulator), and the cloud does not say
which. No more than a window's limit of calls in *any* span of the window's
length keeps within every fixed window of that length, wherever it starts.
Clock-aligned counters did not: against windows that open at the first request
they admitted a new window's calls just before the upstream's window ended,
and a burst met a 429 at nearly every window's edge (14-18 in the bench's burst
of 60 jobs). Each window is counted a little longer than it is (`_span`): a call
leaves the worker some milliseconds after its reservation, more or fewer from
one job to the next, and a window's worth of calls must not reach the upstream
less than a window apart. A 429 that comes anyway is a wait (see
worker.runner), not a failure.

Every entry is stamped on Redis's clock (`TIME` inside the scripts), not on
the clock of the node that reserved it: the nodes of a fleet share one log, and
a node whose clock ran half a second behind the others would otherwise see
their entries leave the window half a second early, and spend a window's calls
twice within it. Times go back to the caller on its own clock (`_on_callers_clock`).

Keys hold a keyed hash of the token (`token_fingerprint`), never the token:
everything sent with one token shares one budget, whichever user sent it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.core.config import get_settings
from shared.core.redis_client import get_redis
from shared.jobs import states as js

PREFIX = "tabpfn-api:pace"

# How much longer than its length a window is counted: the spread of the delay
# from a job's reservation to its calls (claim, read, encode; under load, tens
# of milliseconds) must not let two windows' worth of calls reach the upstream
# within one window. A quarter second, or 1 % of longer windows: a 60-s window
# admits its limit every 60.6 s, 99 % of the published rate.
MARGIN_S = 0.25
_MARGIN_FRACTION = 0.01


def _span(window_s: float) -> float:
    return window_s + max(MARGIN_S, window_s * _MARGIN_FRACTION)


# Redis's clock in a script, in seconds; or the caller's `now` when it gave one (tests).
_NOW = """
local function clock(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# Places entries in a token's logs at now: new ones (a reservation) or ones already
# there (a reservation's later calls, moved to when they are made). KEYS: each kind's
# log, then the token's "closed until" key. ARGV: now ('' for Redis's clock), then per
# kind: how long its log keeps entries, its window count, its entry count, per
# window: span, limit, then the entries' names. Every window must have room for the
# entries beside the log's other entries; returns {0 (placed) or when every window
# will have room (nothing placed), now}.
_PLACE = (
    _NOW
    + """
local now = clock(ARGV[1])
local blocked_until = tonumber(redis.call('GET', KEYS[#KEYS]) or '0')
if blocked_until <= now then blocked_until = 0 end
local at = 2
local members_of = {}
local keep_of = {}
for i = 1, #KEYS - 1 do
  local key = KEYS[i]
  local keep = tonumber(ARGV[at])
  local windows = tonumber(ARGV[at + 1])
  local count = tonumber(ARGV[at + 2])
  local spans_at = at + 3
  local members = {}
  local mine = {}
  for n = 1, count do
    local member = ARGV[spans_at + 2 * windows + n - 1]
    members[n] = member
    mine[member] = tonumber(redis.call('ZSCORE', key, member) or '-1')
  end
  at = spans_at + 2 * windows + count
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%.6f', now - keep))
  for w = 0, windows - 1 do
    local span = tonumber(ARGV[spans_at + 2 * w])
    local limit = tonumber(ARGV[spans_at + 2 * w + 1])
    local since = '(' .. string.format('%.6f', now - span)
    local used = redis.call('ZCOUNT', key, since, '+inf')
    for _, score in pairs(mine) do
      if score > now - span then used = used - 1 end
    end
    local over = used + count - limit
    if over > 0 then
      -- the over-th oldest of the other entries in the window must leave it first
      local free_at = now + span
      if over <= used then
        local oldest = redis.call('ZRANGEBYSCORE', key, since, '+inf',
                                  'WITHSCORES', 'LIMIT', 0, over + count)
        local seen = 0
        for j = 1, #oldest, 2 do
          if mine[oldest[j]] == nil then
            seen = seen + 1
            if seen == over then
              free_at = tonumber(oldest[j + 1]) + span
              break
            end
          end
        end
      end
      if free_at > blocked_until then blocked_until = free_at end
    end
  end
  members_of[i] = members
  keep_of[i] = keep
end
local stamp = string.format('%.6f', now)
if blocked_until > 0 then return {string.format('%.6f', blocked_until), stamp} end
for i = 1, #KEYS - 1 do
  for _, member in ipairs(members_of[i]) do
    redis.call('ZADD', KEYS[i], now, member)
  end
  redis.call('PEXPIRE', KEYS[i], math.ceil(keep_of[i] * 1000) + 5000)
end
return {'0', stamp}
"""
)

# KEYS: the token's "closed until" key. ARGV: now ('' for Redis's clock), how long
# until it reopens (seconds), its lifetime in ms. Never moves an existing closing earlier.
_CLOSE = (
    _NOW
    + """
local reopens = clock(ARGV[1]) + tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[1]) or '0') < reopens then
  redis.call('SET', KEYS[1], string.format('%.6f', reopens), 'PX', ARGV[3])
end
return 0
"""
)


def _on_callers_clock(moment: float, log_now: float, given_now: float | None) -> datetime:
    """A time the log answered, on the caller's clock: the same distance from the
    caller's now, read when the answer came back, as from Redis's (`log_now`). With
    `given_now` (tests), the log ran on the caller's times as given."""
    if given_now is None:
        moment = time.time() + (moment - log_now)
    return datetime.fromtimestamp(moment, UTC)


@dataclass(frozen=True)
class WindowUse:
    kind: str
    window: str  # "minute" or "hour", whatever UPSTREAM_RATE_WINDOW_SCALE makes of them
    window_s: float
    limit: int
    used: int
    resets_at: datetime  # when the oldest call counted leaves the window (now if none)


def calls_for(job_type: str) -> dict[str, int]:
    """The upstream calls a job makes: each fit and each prediction uploads its data once."""
    if job_type == "fit":
        return {"fit": 1, "upload": 1}
    if job_type == "predict":
        return {"predict": 1, "upload": 1}
    return {"fit": 1, "predict": 1, "upload": 2}


def calls_after_fit(reservation: str) -> dict[str, str]:
    """A fit-predict's entries for the calls it makes after its fit: by kind, the last
    entry of the kind it reserved (its prediction, and its second upload: the test set's)."""
    reserved = calls_for(js.FIT_PREDICT)
    return {kind: _names(reservation, reserved[kind])[-1] for kind in ("predict", "upload")}


def _log_key(fingerprint: str, kind: str) -> str:
    return f"{PREFIX}:{fingerprint}:{kind}:log"


def _closed_key(fingerprint: str) -> str:
    return f"{PREFIX}:{fingerprint}:closed"


def new_reservation() -> str:
    # 48 random bits: unique among one token's calls of the last hour, and short, since
    # every call of that hour is an entry (docs/scheduling.md: memory).
    return uuid.uuid4().hex[:12]


def _place(
    fingerprint: str, members: Mapping[str, list[str]], now: float | None
) -> datetime | None:
    """Run _PLACE for `members` (by kind, the entries' names)."""
    limits = get_settings().rate_limits()
    keys: list[str] = []
    argv: list[float | str] = ["" if now is None else now]
    for kind, names in members.items():
        if not names:
            continue
        windows = limits[kind]
        keys.append(_log_key(fingerprint, kind))
        argv += [max(_span(w) for w, _ in windows), len(windows), len(names)]
        for window_s, limit in windows:
            argv += [_span(window_s), limit]
        argv += names
    keys.append(_closed_key(fingerprint))
    until, log_now = (float(v) for v in get_redis().eval(_PLACE, len(keys), *keys, *argv))
    return None if until == 0 else _on_callers_clock(until, log_now, now)


def _names(reservation: str, wanted: int) -> list[str]:
    return [f"{reservation}:{n}" for n in range(1, wanted + 1)]


def reserve(
    fingerprint: str,
    calls: Mapping[str, int],
    *,
    now: float | None = None,
    reservation: str | None = None,
) -> datetime | None:
    """Reserve `calls` from the token's budget; None when reserved, else when to try again
    (on the caller's clock).

    `reservation` names the entries (`refund` takes them back by it). `now` (tests)
    stamps them at that moment instead of on Redis's clock."""
    reservation = reservation or new_reservation()
    members = {kind: _names(reservation, wanted) for kind, wanted in calls.items()}
    return _place(fingerprint, members, now)


def restamp(
    fingerprint: str, entries: Mapping[str, str], *, now: float | None = None
) -> datetime | None:
    """Move reserved entries to the moment their calls are made; None when moved, else
    when the windows will have room for them (nothing moved).

    A fit-predict reserves its prediction when it is claimed, and predicts after its
    fit, which on the real cloud takes seconds to minutes. Stamped at the claim, that
    entry would leave the window while the call is still to come, or long before the
    call does; moved to the call, the log holds the call where it is made.
    """
    return _place(fingerprint, {kind: [name] for kind, name in entries.items()}, now)


def refund(fingerprint: str, calls: Mapping[str, int], *, reservation: str) -> None:
    """Give back a reservation that was not used (the claim it was for did not happen)."""
    _remove(fingerprint, {kind: _names(reservation, wanted) for kind, wanted in calls.items()})


# The entries of a job's reservation that each step of its run sends, by kind (the
# n-th entry of a kind is `<reservation>:<n>`, as `reserve` names them): a
# fit-predict's fit sends the first upload (the training set), its prediction the
# second (the test set), as `calls_after_fit` has it.
_STEP_ENTRIES: dict[str, dict[str, dict[str, int]]] = {
    js.FIT: {"fit": {"fit": 1, "upload": 1}},
    js.PREDICT: {"predict": {"predict": 1, "upload": 1}},
    js.FIT_PREDICT: {"fit": {"fit": 1, "upload": 1}, "predict": {"predict": 1, "upload": 2}},
}


def refund_unsent(
    fingerprint: str, job_type: str, *, reservation: str, sent: Collection[str]
) -> None:
    """Give back the entries of a claim's reservation whose step ("fit", "predict") the
    run never began: it ended before them (failed, handed back at a drain, waiting
    for a window, canceled). Kept, each one held a call of the token's budget for a
    window's length (an hour, for the hour windows) for a call never made, and the
    job's next claim reserved the same calls again. A step begun counts whole: its
    calls may have reached the upstream, which counts what it received."""
    members: dict[str, list[str]] = {}
    for step, entries in _STEP_ENTRIES[job_type].items():
        if step not in sent:
            for kind, n in entries.items():
                members.setdefault(kind, []).append(f"{reservation}:{n}")
    _remove(fingerprint, members)


def _remove(fingerprint: str, members: Mapping[str, list[str]]) -> None:
    pipe = get_redis().pipeline()
    for kind, names in members.items():
        if names:
            pipe.zrem(_log_key(fingerprint, kind), *names)
    pipe.execute()


def exhaust(fingerprint: str, until: datetime) -> None:
    """The upstream said 429 for a window: no call of the token's is reserved before `until`.

    Only for a window that reopens within a minute window's span; a longer wait (an
    hour window) is the scheduler's pause of the token's users in Postgres, which
    this backs up for jobs of other users with the same token.
    """
    minute = min(windows[0][0] for windows in get_settings().rate_limits().values())
    wait = until.timestamp() - time.time()  # `until` is on this node's clock; Redis's differs
    if 0 < wait <= _span(minute):
        ttl_ms = int(wait * 1000) + 1000
        get_redis().eval(_CLOSE, 1, _closed_key(fingerprint), "", wait, ttl_ms)


def window_use(fingerprint: str, *, now: float | None = None) -> list[WindowUse]:
    """The token's budgets in the current windows, for GET /usage."""
    given_now = now
    if now is None:
        seconds, micros = get_redis().time()
        now = seconds + micros / 1_000_000
    limits = get_settings().rate_limits()
    # Settings.rate_limits lists each kind's windows as (minute, hour).
    entries = [
        (kind, name, window_s, limit)
        for kind, windows in limits.items()
        for name, (window_s, limit) in zip(("minute", "hour"), windows, strict=True)
    ]
    pipe = get_redis().pipeline()
    for kind, _, window_s, _ in entries:
        since = f"({now - _span(window_s)}"
        pipe.zcount(_log_key(fingerprint, kind), since, "+inf")
        pipe.zrangebyscore(
            _log_key(fingerprint, kind), since, "+inf", start=0, num=1, withscores=True
        )
    pipe.get(_closed_key(fingerprint))
    *answers, closed = pipe.execute()
    closed_until = float(closed or 0)
    uses = []
    for index, (kind, name, window_s, limit) in enumerate(entries):
        used, oldest = int(answers[2 * index]), answers[2 * index + 1]
        resets = oldest[0][1] + _span(window_s) if oldest else now
        # A 429 closed the token until then (`exhaust`: only for a wait within a
        # minute window's span), so the minute windows show spent. An hour window
        # keeps its count: shown spent, a 30-s closing read as an hour's budget gone.
        if name == "minute" and now < closed_until <= now + _span(window_s):
            used, resets = limit, max(resets, closed_until)
        uses.append(
            WindowUse(
                kind=kind,
                window=name,
                window_s=window_s,
                limit=limit,
                used=min(limit, used),
                resets_at=_on_callers_clock(resets, now, given_now),
            )
        )
    return uses
