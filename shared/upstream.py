"""Calls to the TabPFN upstream made while an API request waits."""

from __future__ import annotations

import httpx

from shared.config import get_settings
from shared.errors import UpstreamAuthFailed, UpstreamError, UpstreamUnavailable
from shared.tabpfn import load_client


def verify_tabpfn_token(token: str) -> None:
    """Raise unless the upstream accepts `token`.

    Uses the client's own HTTP client and endpoint table, with a short timeout
    of ours: the client's default (15 minutes) suits fits, not a sign-up form.
    """
    service = load_client().ServiceClient
    try:
        response = service.httpx_client.get(
            service.server_endpoints.protected_root.path,
            headers={"Authorization": f"Bearer {token}"},
            timeout=get_settings().upstream_timeout_s,
        )
    except httpx.TransportError as exc:
        raise UpstreamUnavailable(
            f"The TabPFN API could not be reached ({type(exc).__name__}); try again shortly."
        ) from exc
    if response.status_code == 200:
        return
    if response.status_code == 403:
        raise UpstreamAuthFailed(
            "TabPFN accepted the token but the account's email address is not verified."
        )
    if response.status_code in (401, 404):
        raise UpstreamAuthFailed("TabPFN rejected this token; check it and try again.")
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise UpstreamUnavailable(
            f"The TabPFN API answered {response.status_code}; try again shortly."
        )
    raise UpstreamError(f"The TabPFN API answered {response.status_code} to a token check.")
