"""Ports for servers: is one free (asked before a server starts, so a taken one
fails in a second), and a free one for a child server to take."""

from __future__ import annotations

import errno
import socket


class PortInUse(RuntimeError):
    """A port another program holds; the message names it and a free one to use instead."""


def check_port(host: str, port: int, option: str, *, command: str) -> None:
    """Raise PortInUse unless a server could listen on host:port now."""
    # The same bind the server will do (uvicorn and tornado set SO_REUSEADDR
    # too), so a port in TIME_WAIT passes and one another program holds does not.
    try:
        _bind(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is already in use by another program; choose a free "
                f"one with {option}, e.g. `{command} {option} {_free_port_near(host, port)}`."
            ) from None
        raise PortInUse(f"cannot listen on {host}:{port} ({exc.strerror}).") from None


def free_port() -> int:
    """A port nothing listens on now, for a child server to take."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def preferred_port(port: int) -> int:
    """`port` on 127.0.0.1 if it is free now, else any free one: a child server
    reachable where the docs say when nothing else holds that port."""
    try:
        _bind("127.0.0.1", port)
    except OSError:
        return free_port()
    return port


def _bind(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def _free_port_near(host: str, port: int) -> int:
    for candidate in range(port + 1, min(port + 100, 65536)):
        try:
            _bind(host, candidate)
        except OSError:
            continue
        return candidate
    return free_port()
