"""The one table from an upstream fault to our error (shared.upstream.faults): pure
functions, no stack. The worker's faults through the whole stack are in
tests/e2e/test_upstream_faults.py and tests/e2e/test_fair_share.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from tabpfn_client.errors import FittedModelNotFoundError, RetryableServerError

from shared.core import errors
from shared.upstream.account import _raise_for
from shared.upstream.faults import (
    SENT_TOKEN,
    STORED_TOKEN,
    classify_fault,
    fault_for_status,
    window_end,
)


@pytest.mark.parametrize(
    ("status", "error", "transient"),
    [
        (401, errors.UpstreamAuthFailed, False),
        (403, errors.UpstreamAuthFailed, False),
        (408, errors.UpstreamUnavailable, True),
        (500, errors.UpstreamUnavailable, True),
        (503, errors.UpstreamUnavailable, True),
        (400, errors.UpstreamError, False),
        (404, errors.UpstreamError, False),
        (422, errors.UpstreamError, False),
    ],
)
def test_each_status_maps_to_one_error_on_both_sides(status, error, transient):
    # The API meets a response, the worker the client's "[HTTP nnn]" text: same answer.
    from_api = fault_for_status(status, detail="boom", what="the usage request")
    from_worker = classify_fault(RuntimeError(f"Fail to call fit: [HTTP {status}] boom"))
    for fault in (from_api, from_worker):
        assert type(fault.error) is error, (status, fault)
        assert fault.transient is transient
        assert fault.wait_until is None


def test_auth_failure_advice_names_whose_token():
    assert fault_for_status(401, detail="").error.message == STORED_TOKEN
    assert fault_for_status(401, detail="", auth_message=SENT_TOKEN).error.message == SENT_TOKEN


def test_a_full_rate_window_is_a_wait_until_it_reopens():
    before = datetime.now(UTC)
    fault = classify_fault(
        RuntimeError("Fail to call fit: [HTTP 429] Too many fit requests; retry after 30 seconds.")
    )
    assert isinstance(fault.error, errors.UpstreamQuotaExceeded)
    assert fault.transient is True
    assert before + timedelta(seconds=29) <= fault.wait_until <= before + timedelta(seconds=31)


def test_a_window_of_unknown_length_waits_for_the_configured_minute():
    fault = fault_for_status(429, detail="Too Many Requests")
    assert fault.transient is True and fault.wait_until is not None
    assert fault.wait_until - datetime.now(UTC) <= timedelta(seconds=60)


def test_window_end_is_the_next_boundary_of_the_minute_window():
    assert window_end("fit", now=125.0) == datetime.fromtimestamp(180, UTC)


def test_a_spent_pool_ends_the_job_with_its_reset_time():
    message = (
        "Fail to call predict: [HTTP 429] Daily usage limit reached; "
        "resets at 2026-12-03T00:00:00+00:00"
    )
    fault = classify_fault(RuntimeError(message))
    assert isinstance(fault.error, errors.UpstreamQuotaExceeded)
    assert fault.transient is False and fault.wait_until is None
    assert fault.error.extra == {"reset_time": "2026-12-03T00:00:00+00:00"}


@pytest.mark.parametrize(
    ("exc", "error", "transient"),
    [
        (FittedModelNotFoundError("gone"), errors.ModelNotFound, False),
        (httpx.ConnectError("refused"), errors.UpstreamUnavailable, True),
        (httpx.ReadTimeout("slow"), errors.UpstreamUnavailable, True),
        (TimeoutError("no budget"), errors.UpstreamUnavailable, True),
        (RetryableServerError("502"), errors.UpstreamUnavailable, True),
        (ValueError("too many rows"), errors.ValidationFailed, False),
    ],
)
def test_client_exceptions(exc, error, transient):
    fault = classify_fault(exc)
    assert type(fault.error) is error and fault.transient is transient


def test_what_is_not_an_upstream_fault_is_left_to_the_caller():
    assert classify_fault(KeyError("bug")) is None
    assert classify_fault(RuntimeError("no status in here")) is None


def test_the_api_side_raises_from_the_same_table():
    request = httpx.Request("POST", "http://upstream/usage")
    cases = [
        (httpx.Response(401, request=request), errors.UpstreamAuthFailed),
        (httpx.Response(503, request=request, text="down"), errors.UpstreamUnavailable),
        (httpx.Response(418, request=request), errors.UpstreamError),
        (
            httpx.Response(429, request=request, text="Daily quota spent"),
            errors.UpstreamQuotaExceeded,
        ),
    ]
    for response, error in cases:
        with pytest.raises(error):
            _raise_for(response, "the usage request")


def test_the_api_side_reads_retry_after():
    request = httpx.Request("POST", "http://upstream/usage")
    response = httpx.Response(429, request=request, headers={"Retry-After": "7"}, text="slow down")
    with pytest.raises(errors.UpstreamQuotaExceeded, match="rate window is full until"):
        _raise_for(response, "the usage request")
