"""The single door to `tabpfn-client`.

The client fixes its server URL when it is first imported (its HTTP client is
a class attribute), so the environment must say where the upstream is before
any `tabpfn_client` module loads. Everything in this project imports the
client through `load_client()`.
"""

from __future__ import annotations

import os
from functools import cache
from types import SimpleNamespace

from shared.core.config import get_settings


def load_client() -> SimpleNamespace:
    return _client()


@cache
def _client() -> SimpleNamespace:
    os.environ.setdefault("TABPFN_CLIENT_API_URL", get_settings().tabpfn_api_url)
    from tabpfn_client import api_models, errors, models
    from tabpfn_client.client import ServiceClient

    _size_connection_pool(ServiceClient)
    return SimpleNamespace(
        ServiceClient=ServiceClient, api_models=api_models, errors=errors, models=models
    )


def _size_connection_pool(service_client: type) -> None:
    """Give the client's one process-wide HTTP client a pool sized for this process.

    tabpfn-client's class-level httpx client keeps at most 20 idle connections
    (httpx's default): with dozens of jobs in flight on one node, every call
    beyond the 20th opened a connection and closed it after its answer, a TCP
    set-up (a TLS handshake against the real cloud) per upstream call, on the
    cores the jobs share. Here every slot can keep one. Idle connections are
    dropped after UPSTREAM_KEEPALIVE_S, which must stay below the upstream's own
    idle timeout: a request sent on a connection the server is closing at that
    moment fails (ReadError, WriteError), and tabpfn-client does not retry every
    call on those. Same URL, timeout, headers and redirects as the client's own;
    built before any connection is opened (a forked node's parent does this, so
    no socket is shared across the fork).
    """
    import httpx

    settings = get_settings()
    slots = settings.worker_concurrency
    old = service_client.httpx_client
    service_client.httpx_client = httpx.Client(
        base_url=old.base_url,
        timeout=old.timeout,
        headers=old.headers,
        follow_redirects=old.follow_redirects,
        limits=httpx.Limits(
            max_connections=max(100, 2 * slots),
            max_keepalive_connections=max(20, slots),
            keepalive_expiry=settings.upstream_keepalive_s,
        ),
    )
    old.close()
