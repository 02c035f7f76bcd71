"""A real HTTP receiver on loopback for webhook tests, answering as scripted.

A test may replace the scripted answer with its own (`Receiver.answer`), written
to the raw connection: receivers that trickle, send too much, or never finish.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    # When the answer was over: sent, or the sender went away (Receiver.answer).
    ended: float | None = None


@dataclass
class Receiver:
    url: str
    # (status, headers) answered in turn; the last one repeats.
    script: list[tuple[int, dict[str, str]]] = field(default_factory=lambda: [(200, {})])
    received: list[Received] = field(default_factory=list)
    # Answers in place of the script when set: given the handler, after the request is read.
    answer: Callable[[BaseHTTPRequestHandler], None] | None = None

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"got {len(self.received)} of {count} webhooks"
            time.sleep(0.05)
        return self.received

    def wait_until_ended(self, count: int, timeout: float = 30) -> list[Received]:
        """The first `count` requests, once the answer to each is over."""
        deadline = time.monotonic() + timeout
        while any(r.ended is None for r in self.wait_for(count, timeout)[:count]):
            ended = sum(r.ended is not None for r in self.received[:count])
            assert time.monotonic() < deadline, f"{ended} of {count} answers over"
            time.sleep(0.05)
        return self.received[:count]


def sender_gone(handler: BaseHTTPRequestHandler, wait_s: float) -> bool:
    """Whether the sender closed the connection, waiting up to `wait_s` to see it."""
    connection = handler.connection
    if not select.select([connection], [], [], wait_s)[0]:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:  # reset
        return True


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def start_receiver(host: str = "127.0.0.1") -> tuple[Receiver, ThreadingHTTPServer]:
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            turn = len(receiver.received)
            received = Received(dict(self.headers), body, time.monotonic())
            receiver.received.append(received)
            try:
                if receiver.answer is not None:
                    receiver.answer(self)
                else:
                    self._scripted(turn)
            except OSError:  # the sender went away mid-answer
                pass
            finally:
                received.ended = time.monotonic()

        def _scripted(self, turn: int) -> None:
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
