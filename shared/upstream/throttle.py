"""What an upstream HTTP 429 means: a rate window to wait out, or a spent token pool.

The TabPFN cloud answers 429 for two different things (docs.priorlabs.ai, "Rate
limits" and "Metering"):

- a per-user request rate window (fits, predictions, uploads per minute and per
  hour; fixed windows) with a `Retry-After` header: transient, wait and retry;
- an exhausted token pool (daily or monthly prediction tokens, the thinking-fit
  quota) with a message naming the pool and when it resets: retrying before the
  reset only spends attempts.

tabpfn-client 0.6.1 drops the response headers and raises
`RuntimeError("Fail to call <method>: [HTTP 429] <message>.")`, where <message>
is the body's `message` (or `detail`, or the reason phrase); a 429 on
`get_fit_status` becomes `CappedRetryableServerError` with the raw body text
instead. So the message is usually all there is: this module reads it, and uses
`Retry-After` only when a caller has it. No I/O, no settings: the caller decides
what "the configured window" is when `RateWindow.until` is None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# "[HTTP 429]" as tabpfn-client >= 0.6 prints it; "with error: 429" as older ones did.
_HTTP_STATUS = re.compile(r"\[HTTP (\d{3})\]|with error: (\d{3})\b")

# Words that only a spent allowance uses. They win over rate-window words: waiting
# a minute for a pool that resets tomorrow would loop until the job's deadline.
_POOL_WORDS = re.compile(
    r"token pool|\bpool\b|quota|usage limit|exhausted|budget|credits?\b|"
    r"\bdaily\b|\bmonthly\b|API_LIMIT_REACHED|USAGE_LIMIT_EXCEEDED|QUOTA_EXCEEDED",
    re.IGNORECASE,
)
_POOL_NAMES = (
    (re.compile(r"thinking", re.IGNORECASE), "thinking_fits"),
    (re.compile(r"\bmonthly\b|\bmonth\b", re.IGNORECASE), "monthly"),
    (re.compile(r"\bdaily\b|\bday\b|per day", re.IGNORECASE), "daily"),
)

# The request kind a rate window counts, as the cloud's docs name them.
_KINDS = (
    (re.compile(r"\bthinking\b", re.IGNORECASE), "thinking_fit"),
    (re.compile(r"\bfit(?:s|ting)?\b", re.IGNORECASE), "fit"),
    (re.compile(r"\bpredict(?:s|ions?)?\b", re.IGNORECASE), "predict"),
    (re.compile(r"\buploads?\b", re.IGNORECASE), "upload"),
)
# tabpfn-client's method names, and the cloud's rate window each one counts in.
_METHOD = re.compile(r"Fail to call (\w+)")
_METHOD_KINDS = {
    "fit": "fit",
    "submit_fit_job": "fit",
    "predict": "predict",
    "prepare_train_set_upload": "upload",
    "prepare_test_set_upload": "upload",
}
_WINDOWS = (
    (re.compile(r"per minute|/\s?min\b|a minute\b|minute window", re.IGNORECASE), "minute"),
    (re.compile(r"per hour|/\s?h(?:our)?\b|an hour\b|hour window", re.IGNORECASE), "hour"),
)

_UNIT_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_UNIT_SECONDS |= {"h": 3600, "hour": 3600}
# "retry after 42 seconds", "try again in 1.5 s", "Retry-After: 42", "wait 2 minutes".
# Never a bare "in": "60 fits in 1 minute" states a limit, not a delay.
_DELAY = re.compile(
    r"(?:retry[- ]after|retry in|try again in|again in|reopens in|resets in|wait)\s*:?\s*"
    r"(\d+(?:\.\d+)?)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|h)?\b",
    re.IGNORECASE,
)
# A JSON body pasted into the message (the get_fit_status path): {"retry_after": 42}.
_JSON_DELAY = re.compile(r'"retry_after(?:_s|_seconds)?"\s*:\s*(\d+(?:\.\d+)?)', re.IGNORECASE)
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
)


@dataclass(frozen=True)
class RateWindow:
    """A rate window is full; it reopens at `until` (None: use the configured window).

    `kind` is the request kind the window counts ("fit", "predict", "upload",
    "thinking_fit") when the message says; `window` is "minute" or "hour" when it does.
    """

    until: datetime | None
    kind: str | None = None
    window: str | None = None


@dataclass(frozen=True)
class PoolExhausted:
    """A token pool is spent: "daily", "monthly" or "thinking_fits" when named.

    `reset_at` is the ISO 8601 time the pool resets, when the message or the
    `Retry-After` header gives it.
    """

    pool: str | None
    reset_at: str | None


def http_status(message: str) -> int | None:
    """The HTTP status tabpfn-client printed into its error message, if any."""
    match = _HTTP_STATUS.search(message)
    if not match:
        return None
    return int(match.group(1) or match.group(2))


def classify_429(
    message: str, retry_after: float | None = None, now: datetime | None = None
) -> RateWindow | PoolExhausted:
    """Tell a full rate window from a spent pool, from what the client raised.

    `message` is the text of the client's exception (or the response body);
    `retry_after` the `Retry-After` seconds when the caller saw the header.
    A 429 that names no pool is a rate window: the cloud's pool answers always
    name the pool, and a bare "Too Many Requests" from a proxy is transient too.
    """
    now = now or datetime.now(UTC)
    if _POOL_WORDS.search(message):
        return PoolExhausted(
            pool=_pool_name(message), reset_at=_reset_at(message, retry_after, now)
        )
    delay = retry_after if retry_after is not None else _delay_in(message)
    if delay is not None:
        until: datetime | None = now + timedelta(seconds=max(delay, 0.0))
    else:
        until = _timestamp_in(message)
    kind = _first(_KINDS, message) or _kind_of_method(message)
    return RateWindow(until=until, kind=kind, window=_first(_WINDOWS, message))


def _first(patterns: tuple[tuple[re.Pattern[str], str], ...], message: str) -> str | None:
    # The earliest mention wins: "60 fit requests per minute" names the fit window
    # even if "predict" appears later in a wrapped "Fail to call predict" prefix.
    body = _body(message)
    best: tuple[int, str] | None = None
    for pattern, name in patterns:
        match = pattern.search(body)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), name)
    return best[1] if best else None


def _kind_of_method(message: str) -> str | None:
    """The window a refused call counts in, from tabpfn-client's "Fail to call <method>"."""
    match = _METHOD.search(message)
    return _METHOD_KINDS.get(match.group(1)) if match else None


def _body(message: str) -> str:
    """The upstream's own text, without tabpfn-client's "Fail to call <method>:" prefix."""
    match = _HTTP_STATUS.search(message)
    return message[match.end() :] if match else message


def _pool_name(message: str) -> str | None:
    for pattern, name in _POOL_NAMES:
        if pattern.search(_body(message)):
            return name
    return None


def _delay_in(message: str) -> float | None:
    body = _body(message)
    if match := _JSON_DELAY.search(body):
        return float(match.group(1))
    for match in _DELAY.finditer(body):
        unit = (match.group(2) or "s").lower().rstrip("s") or "s"
        seconds = _UNIT_SECONDS.get(unit)
        if seconds is not None:
            return float(match.group(1)) * seconds
    return None


def _timestamp_in(message: str) -> datetime | None:
    match = _TIMESTAMP.search(message)
    if not match:
        return None
    try:
        parsed = datetime.fromisoformat(match.group(0).replace(" ", "T"))
    except ValueError:
        return None
    # The cloud's reset times are UTC (midnight UTC, the 1st of the month).
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _reset_at(message: str, retry_after: float | None, now: datetime) -> str | None:
    if (when := _timestamp_in(message)) is not None:
        return when.isoformat()
    if retry_after is not None:
        return (now + timedelta(seconds=retry_after)).isoformat()
    return None
