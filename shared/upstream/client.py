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


@cache
def load_client() -> SimpleNamespace:
    os.environ.setdefault("TABPFN_CLIENT_API_URL", get_settings().tabpfn_api_url)
    from tabpfn_client import api_models, errors, models
    from tabpfn_client.client import ServiceClient

    _keep_connections_alive(ServiceClient)
    return SimpleNamespace(
        ServiceClient=ServiceClient, api_models=api_models, errors=errors, models=models
    )


def renew_after_fork() -> None:
    """In a process forked from one that used the upstream: a connection pool of its own.

    Under prefork the node's parent warms up (and asks the upstream for its limits)
    before it forks the pool's processes, which inherit its open connections. Two
    processes writing requests on one socket read each other's answers: a job failed
    with `validation_error` on a response meant for its sibling. Closing the inherited
    copies here sends nothing (the parent still holds each socket, and HTTP/1.1 says
    nothing on close), so the parent's connections are untouched.
    """
    _keep_connections_alive(load_client().ServiceClient)


def _keep_connections_alive(service_client: type) -> None:
    """Let the client's one process-wide HTTP client keep every connection it opened.

    tabpfn-client's class-level httpx client keeps at most 20 idle connections
    (httpx's default): with dozens of jobs in flight on one node, every call
    beyond the 20th opened a connection and closed it after its answer, a TCP
    set-up (a TLS handshake against the real cloud) per upstream call, on the
    cores the jobs share. Unbounded here: a slot makes one call at a time, so a
    process holds at most as many connections as it has jobs in flight, however
    its slots were set (WORKER_CONCURRENCY, `--concurrency`, WORKER_PROCESSES).
    Idle ones are dropped after UPSTREAM_KEEPALIVE_S, which must stay below the
    upstream's own idle timeout: a request sent on a connection the server is
    closing at that moment fails (ReadError, WriteError), and tabpfn-client does
    not retry every call on those. Same URL, timeout, headers and redirects as
    the client's own. A node of several processes builds it in its parent
    before the fork, with no socket yet to share; prefork's pool processes,
    whose parent has used it, build it again (`renew_after_fork`).
    """
    import httpx

    old = service_client.httpx_client
    service_client.httpx_client = httpx.Client(
        base_url=old.base_url,
        timeout=old.timeout,
        headers=old.headers,
        follow_redirects=old.follow_redirects,
        limits=httpx.Limits(
            max_connections=None,
            max_keepalive_connections=None,
            keepalive_expiry=get_settings().upstream_keepalive_s,
        ),
    )
    old.close()
