"""Where webhooks may go: public http(s) addresses only (SSRF protection).

A callback URL must not make our workers probe the network they run in. The
host is resolved and every address checked, at submit and again at delivery
(DNS may change in between); the delivery then connects to an address that
was checked, so a second, different DNS answer cannot slip through.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.core.errors import CallbackUrlForbidden, CallbackUrlUnresolvable

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# NAT64's well-known prefix: a gateway sends 64:ff9b::a.b.c.d on to a.b.c.d.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


# The names this module's callers know; the codes live in shared.core.errors.
TargetRefused = CallbackUrlForbidden
TargetUnresolvable = CallbackUrlUnresolvable


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    addresses: list[str]


def refusal_reason(address: str) -> str | None:
    """Why an address is not a public one, or None when it is."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local:  # fec0::/10: deprecated, still routed on some networks
            return "site-local"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded  # ::ffff:127.0.0.1 is 127.0.0.1, and 2002:7f00:1:: reaches it
    for reason, hit in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("carrier-grade NAT", ip in _CGNAT if ip.version == 4 else False),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    ):
        if hit:
            return reason
    return None


# Seconds a submit waits for its callback host to resolve (a delivery gives the lookup
# what is left of its attempt). Without a bound, a host whose nameserver never answers
# held the submit's thread for the system resolver's own timeouts, each one.
CALLBACK_LOOKUP_TIMEOUT_S = 5.0

# Browsers and CDNs take URLs of about this length. Longer ones are refused at submit
# (HTTP stacks refuse some at delivery: httpx's past 64 KiB, once the job was accepted).
MAX_URL_LENGTH = 2048


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to: mapped, 6to4, Teredo's client, NAT64."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _lookup(host: str, port: int, timeout: float | None) -> list:
    """getaddrinfo, given up after `timeout` seconds (None: as long as it takes).

    The system resolver has no timeout of its own that we set, and cannot be
    interrupted: it runs on a thread of its own, left to finish on its own when
    it is given up (it ends at the resolver's own timeouts, resolv.conf's).
    """
    if timeout is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if timeout <= 0:
        raise TargetUnresolvable(f"callback_url host {host!r}: no time was left to resolve it.")
    answer: Future[list] = Future()

    def resolve() -> None:
        try:
            answer.set_result(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            answer.set_exception(exc)

    threading.Thread(target=resolve, name="webhook-dns", daemon=True).start()
    try:
        return answer.result(timeout)
    except FutureTimeout:
        raise TargetUnresolvable(
            f"callback_url host {host!r} did not resolve within {timeout:.1f} s."
        ) from None


def check_target(url: str, *, allow_private: bool, timeout: float | None = None) -> Target:
    """Resolve the URL's host and refuse it unless every address is public.

    `timeout`: seconds the DNS lookup may take (a delivery gives it what is left
    of its attempt); past it, TargetUnresolvable."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(
            f"callback_url is {len(url)} characters long; at most {MAX_URL_LENGTH} are taken."
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("callback_url must be an http(s) URL with a host.")
    if parts.username is not None or parts.password is not None:
        # Accepted, they were never sent: every attempt met the receiver's 401.
        raise TargetRefused(
            "callback_url must not carry a user name or password (they are not sent); "
            "check the event's signature instead (docs/webhooks.md)."
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = _lookup(parts.hostname, port, timeout)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolvable(f"callback_url host {parts.hostname!r} does not resolve.") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not allow_private:
        for address in addresses:
            reason = refusal_reason(address)
            if reason:
                # The address itself is not told: any user could map the deployment's
                # own network with it.
                raise TargetRefused(
                    f"callback_url host {parts.hostname!r} resolves to an address that is "
                    f"not public ({reason}); "
                    "webhooks go to public addresses only (the operator may allow others "
                    "with WEBHOOK_ALLOW_PRIVATE_TARGETS=true, as `tabpfn-api dev` does on a "
                    "loopback address)."
                )
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return Target(parts.scheme, parts.hostname, port, path, addresses)
