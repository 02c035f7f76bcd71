"""The one table from an upstream fault to our error: for the API and the worker alike.

An upstream answer reaches us two ways: as an HTTP response (the API's account
calls in shared.upstream.account) or as an exception of tabpfn-client (the worker's fits
and predictions, whose HTTP failures the client prints as "[HTTP 401] ..."). Both
end here, so a status means the same error on both sides:

| upstream                         | our error                 | transient | wait_until |
|----------------------------------|---------------------------|-----------|------------|
| 401, 403                         | upstream_auth_failed      | no        |            |
| 429, a full rate window          | upstream_quota_exceeded   | yes       | its end    |
| 429, a spent token pool          | upstream_quota_exceeded   | no        |            |
| 408, 5xx, unreachable, timeout   | upstream_unavailable      | yes       |            |
| other statuses                   | upstream_error            | no        |            |
| the fitted model is gone         | model_not_found           | no        |            |
| the client's own data checks     | validation_error          | no        |            |

`transient`: a retry of the same call may succeed. `wait_until`: the job waits
until then without spending an attempt (shared.upstream.pacing, the scheduler).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from shared.core.config import get_settings
from shared.core.errors import (
    ModelNotFound,
    ServiceError,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamQuotaExceeded,
    UpstreamUnavailable,
    ValidationFailed,
)
from shared.upstream.client import load_client
from shared.upstream.throttle import RateWindow, classify_429, http_status

# Who the token is, in an auth failure's advice: the API checks the token it was
# just sent; the worker uses the one stored with the account.
SENT_TOKEN = "TabPFN rejected this token; check it and try again."
STORED_TOKEN = (
    "TabPFN rejected the stored token; replace it (PUT /api/v1/auth/tabpfn-token, or "
    "`tabpfn-api-client token`: your account, keys and models stay) and retry."
)


@dataclass(frozen=True)
class UpstreamFault:
    error: ServiceError
    transient: bool
    # Set for a full rate window: the job waits until then (not an attempt, not a failure).
    wait_until: datetime | None = None


def fault_for_status(
    status: int,
    *,
    detail: str,
    what: str = "the request",
    auth_message: str = STORED_TOKEN,
    retry_after: float | None = None,
) -> UpstreamFault:
    """The fault an upstream HTTP status means; `detail` is the answer's text,
    `retry_after` its Retry-After seconds when the caller saw the header."""
    if status in (401, 403):
        return UpstreamFault(UpstreamAuthFailed(auth_message), transient=False)
    if status == 429:
        return throttled(detail, retry_after)
    if status >= 500 or status == 408:
        return UpstreamFault(
            UpstreamUnavailable(f"The TabPFN API answered {status} to {what}: {detail}"),
            transient=True,
        )
    return UpstreamFault(
        UpstreamError(f"The TabPFN API answered {status} to {what}: {detail}"), transient=False
    )


def classify_fault(exc: BaseException) -> UpstreamFault | None:
    """Map what tabpfn-client raised to our error; None when it is not an upstream fault."""
    client = load_client()
    if isinstance(exc, client.errors.FittedModelNotFoundError):
        return UpstreamFault(
            ModelNotFound("The fitted model no longer exists in the TabPFN account; fit again."),
            transient=False,
        )
    if isinstance(exc, httpx.TimeoutException | httpx.TransportError | TimeoutError):
        return UpstreamFault(
            UpstreamUnavailable(f"The TabPFN API could not be reached ({type(exc).__name__})."),
            transient=True,
        )
    if isinstance(
        exc, client.errors.RetryableServerError | client.errors.CappedRetryableServerError
    ):
        return UpstreamFault(UpstreamUnavailable(f"The TabPFN API failed: {exc}"), transient=True)
    if isinstance(exc, RuntimeError) and (status := http_status(str(exc))) is not None:
        return fault_for_status(status, detail=str(exc))
    if isinstance(exc, ValueError):
        # tabpfn-client validates data against the upstream's limits before upload.
        return UpstreamFault(ValidationFailed(str(exc)), transient=False)
    return None


def throttled(message: str, retry_after: float | None = None) -> UpstreamFault:
    """A 429: a full rate window is a wait; an exhausted token pool ends the job."""
    verdict = classify_429(message, retry_after)
    if isinstance(verdict, RateWindow):
        until = verdict.until or window_end(verdict.kind)
        return UpstreamFault(
            UpstreamQuotaExceeded(f"The TabPFN rate window is full until {until.isoformat()}."),
            transient=True,
            wait_until=until,
        )
    return UpstreamFault(quota_exceeded(message), transient=False)


def window_end(kind: str | None, now: float | None = None) -> datetime:
    """When the current minute window ends, as the settings know windows (no Retry-After)."""
    windows = get_settings().rate_limits().get(kind or "fit")
    window_s = windows[0][0] if windows else 60.0
    now = time.time() if now is None else now
    return datetime.fromtimestamp((now // window_s + 1) * window_s, UTC)


_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)?")


def quota_exceeded(message: str) -> ServiceError:
    """A spent usage limit: retrying before the reset only spends attempts."""
    reset = _TIMESTAMP.search(message)
    when = f"; it resets at {reset.group(0)}" if reset else ""
    return UpstreamQuotaExceeded(
        f"The TabPFN account's usage limit is reached{when}. Submit the job again after that.",
        **({"reset_time": reset.group(0)} if reset else {}),
    )
