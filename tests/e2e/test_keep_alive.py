"""The API keeps an idle keep-alive connection open for API_KEEPALIVE_S (100 s).

uvicorn's own default, 5 s, equals the idle time of httpx's connection pool: a
request sent as the server closes an idle connection fails with a reset. With the
API's longer default, a connection idle for longer than 5 s still carries the
next request; with the setting low, the API closes it.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

from tests.support.stacks import Stack

_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n"


def _answer(sock: socket.socket) -> bytes:
    """One response (headers and a short body), or b"" when the server closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def _connect(api_url: str) -> socket.socket:
    url = urlparse(api_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    sock.sendall(_REQUEST)
    assert _answer(sock).startswith(b"HTTP/1.1 200"), "the first request was not answered"
    return sock


def test_an_idle_connection_outlives_uvicorns_five_seconds(stack: Stack, tmp_path) -> None:
    sock = _connect(stack.api_url)
    with stack.extra_api("api-keepalive-1s", tmp_path, API_KEEPALIVE_S="1") as (url, _):
        short = _connect(url.removesuffix("/api/v1"))
        time.sleep(6.0)  # longer than uvicorn's default and than httpx's pool keeps one
        # The setting is what uvicorn was given: at 1 s that API has closed its side.
        assert _answer(short) == b""
        short.close()
    sock.sendall(_REQUEST)
    assert _answer(sock).startswith(b"HTTP/1.1 200")
    sock.close()
