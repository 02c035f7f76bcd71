"""The 429 classifier on messages as the emulator (and the cloud's docs) word them,
wrapped the way tabpfn-client 0.6.1 wraps them.

The wrapping is not imitated: `wrapped()` runs the client's own `_raise_http_error`
on a real `httpx.Response`, so a change in the client's wording shows up here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tabpfn_client.client import ServiceClient

from emulator.app import create_app
from emulator.config import EmulatorConfig
from shared.upstream.throttle import PoolExhausted, RateWindow, classify_429, http_status

NOW = datetime(2026, 12, 2, 20, 0, 0, tzinfo=UTC)

# The emulator's bodies, word for word (tests below check the emulator still says this).
FIT_MINUTE = "Rate limit exceeded for fit requests: 60 per minute. Retry after 42 seconds"
PREDICT_HOUR = "Rate limit exceeded for predict requests: 1500 per hour. Retry after 1800 seconds"
UPLOAD_MINUTE = "Rate limit exceeded for upload requests: 120 per minute. Retry after 3 seconds"
DAILY_POOL = (
    "Daily prediction token pool exhausted: 49,998,000 of 50,000,000 tokens used and this "
    "request needs 5,000. The daily pool resets at 2026-12-03T00:00:00+00:00"
)
MONTHLY_POOL = (
    "Monthly prediction token pool exhausted: 200,000,000 of 200,000,000 tokens used and "
    "this request needs 5,000. The monthly pool resets at 2027-01-01T00:00:00+00:00"
)
USAGE_LIMIT = "Daily usage limit of 1 predict calls reached; it resets at 2026-12-03T00:00:00+00:00"


def wrapped(method: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    """What tabpfn-client raises for a 429 with this JSON body (headers are lost)."""
    response = httpx.Response(
        429,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
        request=httpx.Request("POST", "http://upstream/tabpfn/x"),
    )
    parsed, message = ServiceClient._read_json_body(response)
    with pytest.raises(RuntimeError) as caught:
        ServiceClient._raise_http_error(response, method, parsed, message)
    return str(caught.value)


def test_client_wraps_the_message_and_drops_retry_after() -> None:
    text = wrapped("fit", {"message": FIT_MINUTE}, headers={"Retry-After": "42"})
    assert text == f"Fail to call fit: [HTTP 429] {FIT_MINUTE}."
    assert http_status(text) == 429


@pytest.mark.parametrize(
    ("method", "message", "kind", "window", "seconds"),
    [
        ("fit", FIT_MINUTE, "fit", "minute", 42),
        ("predict", PREDICT_HOUR, "predict", "hour", 1800),
        ("prepare_train_set_upload", UPLOAD_MINUTE, "upload", "minute", 3),
        ("prepare_test_set_upload", UPLOAD_MINUTE, "upload", "minute", 3),
    ],
)
def test_rate_window_reopens_when_the_message_says(
    method: str, message: str, kind: str, window: str, seconds: int
) -> None:
    verdict = classify_429(wrapped(method, {"message": message}), now=NOW)
    assert verdict == RateWindow(until=NOW + timedelta(seconds=seconds), kind=kind, window=window)


def test_retry_after_header_wins_over_the_text() -> None:
    verdict = classify_429(wrapped("fit", {"message": FIT_MINUTE}), retry_after=7, now=NOW)
    assert isinstance(verdict, RateWindow)
    assert verdict.until == NOW + timedelta(seconds=7)


@pytest.mark.parametrize(
    ("method", "message", "pool", "reset_at"),
    [
        ("predict", DAILY_POOL, "daily", "2026-12-03T00:00:00+00:00"),
        ("predict", MONTHLY_POOL, "monthly", "2027-01-01T00:00:00+00:00"),
        ("predict", USAGE_LIMIT, "daily", "2026-12-03T00:00:00+00:00"),
        # The cloud's docs: a thinking-fit quota answers 429 on /tabpfn/fit.
        (
            "fit",
            "Monthly thinking fit quota of 20 reached; it resets at 2027-01-01T00:00:00Z",
            "thinking_fits",
            "2027-01-01T00:00:00+00:00",
        ),
    ],
)
def test_spent_pool_is_named_with_its_reset(
    method: str, message: str, pool: str, reset_at: str
) -> None:
    verdict = classify_429(wrapped(method, {"message": message}), now=NOW)
    assert verdict == PoolExhausted(pool=pool, reset_at=reset_at)


def test_pool_wins_even_with_a_retry_after() -> None:
    # A pool that resets tomorrow must not turn into a one-minute wait.
    verdict = classify_429(wrapped("predict", {"message": DAILY_POOL}), retry_after=60, now=NOW)
    assert verdict == PoolExhausted(pool="daily", reset_at="2026-12-03T00:00:00+00:00")


def test_pool_without_a_time_takes_it_from_retry_after() -> None:
    text = wrapped("predict", {"message": "Token budget exhausted"})
    verdict = classify_429(text, retry_after=3600, now=NOW)
    assert verdict == PoolExhausted(pool=None, reset_at="2026-12-02T21:00:00+00:00")


def test_get_fit_status_carries_the_raw_body() -> None:
    # tabpfn-client puts res.text, not the message, into its CappedRetryableServerError.
    body = json.dumps({"message": FIT_MINUTE, "retry_after": 42})
    text = f"Fail to call get_fit_status: [HTTP 429] {body}."
    verdict = classify_429(text, now=NOW)
    assert verdict == RateWindow(until=NOW + timedelta(seconds=42), kind="fit", window="minute")
    pool = json.dumps({"message": DAILY_POOL, "reset_time": "2026-12-03T00:00:00+00:00"})
    assert isinstance(
        classify_429(f"Fail to call get_fit_status: [HTTP 429] {pool}."), PoolExhausted
    )


def test_bare_429_is_a_window_of_unknown_length() -> None:
    # No JSON body: the client falls back to the reason phrase.
    response = httpx.Response(429, request=httpx.Request("POST", "http://upstream/tabpfn/predict"))
    parsed, message = ServiceClient._read_json_body(response)
    with pytest.raises(RuntimeError) as caught:
        ServiceClient._raise_http_error(response, "predict", parsed, message)
    assert str(caught.value) == "Fail to call predict: [HTTP 429] Too Many Requests."
    # The window is the one the refused call counts in, from the client's method name.
    assert classify_429(str(caught.value), now=NOW) == RateWindow(until=None, kind="predict")


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Too many requests, please try again in 2 minutes", 120),
        ("Rate limited. Retry-After: 15", 15),
        ("Slow down: retry in 1.5 s", 1.5),
        ("Please wait 1 hour before sending more fits", 3600),
    ],
)
def test_time_phrases(message: str, seconds: float) -> None:
    verdict = classify_429(f"Fail to call fit: [HTTP 429] {message}.", now=NOW)
    assert isinstance(verdict, RateWindow)
    assert verdict.until == NOW + timedelta(seconds=seconds)


def test_a_stated_limit_is_not_a_delay() -> None:
    verdict = classify_429("Fail to call fit: [HTTP 429] At most 60 fits in 1 minute.", now=NOW)
    assert verdict == RateWindow(until=None, kind="fit", window=None)


def test_window_end_as_a_timestamp() -> None:
    text = "Fail to call predict: [HTTP 429] Rate limit exceeded; the window reopens at 20:01Z"
    assert classify_429(text, now=NOW) == RateWindow(until=None, kind="predict", window=None)
    text = "Fail to call predict: [HTTP 429] Rate limit exceeded until 2026-12-02T20:01:00Z"
    verdict = classify_429(text, now=NOW)
    assert verdict == RateWindow(until=datetime(2026, 12, 2, 20, 1, tzinfo=UTC), kind="predict")


def test_older_client_wording_and_no_status() -> None:
    assert http_status("Fail to call predict with error: 429, reason: Too Many Requests") == 429
    assert http_status("Fail to call predict: [HTTP 503] busy.") == 503
    assert http_status("something else") is None


def test_now_defaults_to_the_current_utc_time() -> None:
    before = datetime.now(UTC)
    verdict = classify_429(f"Fail to call fit: [HTTP 429] {FIT_MINUTE}.")
    assert isinstance(verdict, RateWindow) and verdict.until is not None
    assert (
        before + timedelta(seconds=41) <= verdict.until <= datetime.now(UTC) + timedelta(seconds=43)
    )


# --- The emulator says what the literals above say ---------------------------------


def test_emulator_bodies_match_the_literals() -> None:
    client = TestClient(
        create_app(
            EmulatorConfig(tokens=["t"], rate_limits=True, uploads_per_minute=1, usage_limit=0)
        )
    )
    auth = {"Authorization": "Bearer t"}
    body = {"x_train_info": {"format": "parquet"}, "y_train_info": {"format": "parquet"}}
    assert client.post("/tabpfn/prepare_train_set_upload", json=body, headers=auth).is_success
    refused = client.post("/tabpfn/prepare_train_set_upload", json=body, headers=auth)
    assert refused.status_code == 429
    seconds = int(refused.headers["retry-after"])
    assert refused.json()["message"] == (
        f"Rate limit exceeded for upload requests: 1 per minute. Retry after {seconds} seconds"
    )
