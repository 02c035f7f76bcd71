"""Calls to the TabPFN upstream made while an API request waits.

They go through the client's own HTTP client and endpoint table, with a short
timeout of ours: the client's default (15 minutes) suits fits, not a form.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx

from shared.core.config import get_settings
from shared.core.errors import UpstreamAuthFailed, UpstreamUnavailable
from shared.upstream.client import load_client
from shared.upstream.faults import SENT_TOKEN, STORED_TOKEN, fault_for_status

log = logging.getLogger(__name__)

SETTINGS_PATH = "/tabpfn/get_settings"


def _call(
    method: str, path: str, *, token: str | None = None, params: dict | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return load_client().ServiceClient.httpx_client.request(
            method, path, headers=headers, params=params, timeout=get_settings().upstream_timeout_s
        )
    except httpx.TransportError as exc:
        raise UpstreamUnavailable(
            f"The TabPFN API could not be reached ({type(exc).__name__}); try again shortly."
        ) from exc


def _raise_for(response: httpx.Response, what: str, *, auth_message: str = SENT_TOKEN) -> None:
    """Raise the error shared.upstream.faults maps this answer to; `auth_message` is
    what a refused token is told (one just sent, or the one stored)."""
    retry_after = response.headers.get("Retry-After", "")
    raise fault_for_status(
        response.status_code,
        # The answer's text says which 429 it is; a page of HTML says nothing more.
        detail=response.text[:300],
        what=what,
        auth_message=auth_message,
        retry_after=float(retry_after) if retry_after.isdigit() else None,
    ).error


def _endpoint(name: str) -> str:
    return load_client().ServiceClient.server_endpoints[name].path


def verify_tabpfn_token(token: str) -> None:
    """Raise unless the upstream accepts `token`."""
    response = _call("GET", _endpoint("protected_root"), token=token)
    if response.status_code == 200:
        return
    if response.status_code == 403:
        raise UpstreamAuthFailed(
            "TabPFN accepted the token but the account's email address is not verified."
        )
    if response.status_code == 404:
        raise UpstreamAuthFailed(SENT_TOKEN)
    _raise_for(response, "the token check")


def fetch_usage(token: str) -> dict[str, Any]:
    """The caller's usage as the upstream reports it (current usage, limit, reset time)."""
    response = _call("POST", _endpoint("get_api_usage"), token=token)
    if response.status_code != 200:
        # Read with the stored token: a refusal says how to replace it.
        _raise_for(response, "the usage request", auth_message=STORED_TOKEN)
    return response.json()


def delete_upstream_model(token: str, upstream_model_id: str) -> bool:
    """Delete a fitted model from the user's TabPFN account; False if it could not be."""
    try:
        response = _call(
            "DELETE",
            _endpoint("delete_dataset"),
            token=token,
            params={"dataset_uid": upstream_model_id},
        )
    except UpstreamUnavailable:
        return False
    # 404: already gone upstream, which is what was asked.
    return response.status_code in (200, 204, 404)


_limits_lock = threading.Lock()
_limits: tuple[float, Any] | None = None


def upstream_limits() -> Any | None:
    """The upstream's model limits (a `ModelLimit`), cached; None when unknown.

    Unknown limits never block a job: the upstream still enforces its own.
    """
    global _limits
    ttl_s = get_settings().upstream_settings_ttl_s
    with _limits_lock:
        if _limits is not None and time.monotonic() - _limits[0] < ttl_s:
            return _limits[1]
    try:
        response = _call("GET", SETTINGS_PATH)
        response.raise_for_status()
        settings = load_client().api_models.GetSettingsResponse.model_validate(response.json())
    except Exception as exc:  # unreachable, refused, or a shape we do not know
        log.warning("upstream limits unavailable (%s); not checking them", type(exc).__name__)
        return _limits[1] if _limits else None
    limit = settings.model_limits.get(settings.default_model_version, settings.max_model_limit)
    with _limits_lock:
        _limits = (time.monotonic(), limit)
    _share_with_the_client(settings)
    return limit


def _share_with_the_client(settings: Any) -> None:
    """Fill tabpfn-client's own cache of these settings with the answer we just got.

    The client reads the same settings inside every fit and predict
    (`ServiceClient.get_settings`), cached per process for an hour and fetched
    without a lock. Left cold, every job of a worker's first wave made that call
    itself: one more upstream round trip each (a whole second per job against
    an upstream at 1 s per call). Sharing our answer makes it one call per
    process, made during warm-up. Our TTL (UPSTREAM_SETTINGS_TTL_S) is the
    client's hour by default, and the runner asks us before each fit, so ours
    refreshes first and refills the client's with it. The attributes are the
    client's own (pinned version); if a release renamed them this would do
    nothing, and tests/e2e/test_worker_capacity.py would fail on the calls.
    """
    client = load_client().ServiceClient
    if hasattr(client, "_api_settings") and hasattr(client, "_api_settings_ts"):
        client._api_settings = settings
        client._api_settings_ts = time.monotonic()
