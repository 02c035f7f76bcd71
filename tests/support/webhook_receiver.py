"""A real HTTP receiver on loopback for webhook tests, answering as scripted."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    url: str
    # (status, headers) answered in turn; the last one repeats.
    script: list[tuple[int, dict[str, str]]] = field(default_factory=lambda: [(200, {})])
    received: list[Received] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"got {len(self.received)} of {count} webhooks"
            time.sleep(0.05)
        return self.received


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def start_receiver(host: str = "127.0.0.1") -> tuple[Receiver, ThreadingHTTPServer]:
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            turn = len(receiver.received)
            receiver.received.append(Received(dict(self.headers), body, time.monotonic()))
            status, headers = receiver.script[min(turn, len(receiver.script) - 1)]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = (_IPv6Server if ":" in host else ThreadingHTTPServer)((host, 0), Handler)
    host_in_url = f"[{host}]" if ":" in host else host
    receiver.url = f"http://{host_in_url}:{server.server_address[1]}/hooks/tabpfn"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server
