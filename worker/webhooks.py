"""Deliver one webhook event: sign, POST, record the attempt, schedule a retry.

Standard Webhooks: `webhook-id` (stable across retries), `webhook-timestamp`,
`webhook-signature` = `v1,<base64 HMAC-SHA256 of id.timestamp.body>` with the
user's `whsec_` secret. Only a 2xx counts; redirects are not followed; 410
Gone stops for good; `Retry-After` is honoured.

An attempt is bounded whatever the receiver and its DNS do: looking its host
up, connecting, sending and reading the status line and headers share one
deadline of WEBHOOK_TIMEOUT_S, and the body of the answer is never read (a
receiver that trickles it, sends gigabytes, or a gzip bomb, holds nothing of
ours). Deliveries run on the worker's job slots, and take at most
WEBHOOK_SLOT_SHARE of them at once, shared between users (DeliverySlots).
"""

from __future__ import annotations

import functools
import logging
import random
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpcore
import httpx
from standardwebhooks.webhooks import Webhook

from shared.accounts.security import SecretUnreadable, decrypt_secret
from shared.core.config import get_settings
from shared.core.db import session_scope
from shared.models import WebhookDelivery
from shared.queue import enqueue_webhook
from shared.webhooks.deliveries import (
    claim_delivery,
    overdue_deliveries,
    pending_delivery_due,
    postpone_delivery,
    record_attempt,
    secret_of_job_owner,
)
from shared.webhooks.events import FAILED, PENDING, SUCCEEDED
from shared.webhooks.targets import Target, TargetRefused, TargetUnresolvable, check_target

log = logging.getLogger(__name__)


def _claim(delivery_id: uuid.UUID) -> WebhookDelivery | None:
    """Take a due delivery; the lease keeps a duplicate message from sending it twice."""
    # Longer than an attempt can last (its deadline), so the sweeper never sends the
    # event again while an attempt is still open.
    lease = timedelta(seconds=get_settings().webhook_timeout_s + 30)
    with session_scope() as session:
        return claim_delivery(session=session, delivery_id=delivery_id, lease=lease)


class _JobGone(Exception):
    """The delivery's job, or its owner's account, was deleted after the claim: the
    delivery's row went with it (a cascade), and nothing is to be sent or recorded."""


def _secret(job_id: uuid.UUID) -> str:
    with session_scope() as session:
        user_secret = secret_of_job_owner(session=session, job_id=job_id)
    if user_secret is None:
        raise _JobGone
    return decrypt_secret(user_secret)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once per process.

    Building one loads the CA bundle: about 20 ms of CPU, and a new connection
    pool builds one unless it is given one. A delivery's own pool (no connection
    reused across receivers) costs under a millisecond with this. An SSLContext
    is safe to share between threads.
    """
    return httpx.create_ssl_context()


def _left(deadline: float, timeout: float | None, expired: type[Exception]) -> float:
    """Seconds a socket operation may take: what is left of the attempt, at most."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("The attempt's deadline has passed.")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the attempt's deadline.

    A timeout per read is not enough: a receiver that sends a byte of its headers
    every few seconds never lets one fire, and held a worker slot for good.
    """

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream, self._deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # The request is a few hundred bytes: the socket's buffer takes it in one send.
        self._stream.write(buffer, _left(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, left), self._deadline
        )

    def get_extra_info(self, info: str) -> object:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sockets, each operation bounded by one deadline for the whole attempt."""

    def __init__(self, deadline: float) -> None:
        self._backend, self._deadline = httpcore.SyncBackend(), deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options=None,
    ) -> httpcore.NetworkStream:
        left = _left(self._deadline, timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, left, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


@dataclass(frozen=True)
class Answer:
    """What a receiver said: its status line and headers; its body is never read."""

    status_code: int
    headers: list[tuple[bytes, bytes]]

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == wanted), None)


def _host_header(target: Target) -> str:
    # An IPv6 literal is bracketed in a Host header as in a URL (RFC 9110, 7.2).
    host = f"[{target.host}]" if ":" in target.host else target.host
    default_port = 443 if target.scheme == "https" else 80
    return host if target.port == default_port else f"{host}:{target.port}"


def _post(target: Target, delivery: WebhookDelivery, secret: str, deadline: float) -> Answer:
    """POST to an address that was checked, not to whatever DNS answers next.

    Ends by `deadline` (httpcore.TimeoutException past it), once the status line
    and headers are in: the connection is then closed, unread.
    """
    address = target.addresses[0]
    url = httpcore.URL(
        scheme=target.scheme,
        host=address,
        port=target.port,
        target=target.path,
    )
    now = datetime.now(UTC)
    body = delivery.payload.encode()
    headers = {
        "Host": _host_header(target),
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        # The body is not read; asked for as is, it cannot be one to inflate either.
        "Accept-Encoding": "identity",
        "User-Agent": "tabpfn-api-webhooks/1",
        "webhook-id": delivery.event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(delivery.event_id, now, delivery.payload),
    }
    with httpcore.ConnectionPool(
        ssl_context=tls_context(), max_connections=1, network_backend=_DeadlineBackend(deadline)
    ) as pool:
        # TLS must name (and verify) the host, though we connect to its address.
        extensions = {"sni_hostname": target.host}
        with pool.stream("POST", url, headers=headers, content=body, extensions=extensions) as r:
            # Leaving the block closes the connection with the body unread.
            return Answer(r.status, list(r.headers))


def _retry_after_s(answer: Answer) -> float | None:
    value = answer.header("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _next_delay(attempt: int, retry_after: float | None) -> float | None:
    """Seconds until the next try, or None when the schedule is spent."""
    delays = get_settings().webhook_retry_delays()
    if attempt > len(delays):
        return None
    planned = delays[attempt - 1] * random.uniform(0.8, 1.2)
    if retry_after is not None:
        # The receiver asked for a pause: wait that long, but never past our longest delay.
        return min(max(retry_after, planned), max(delays))
    return planned


@dataclass(frozen=True)
class _Result:
    """What came of one attempt."""

    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    final: bool = False  # nothing more to try: delivered, or 410 Gone


def _why(exc: Exception) -> str:
    """The attempt's error, in a sentence with no secret in it (nor the exception's text)."""
    if isinstance(exc, TargetRefused | TargetUnresolvable):
        return exc.message
    if isinstance(exc, httpcore.TimeoutException):
        return f"The receiver did not answer within {get_settings().webhook_timeout_s:g} s."
    if isinstance(exc, httpcore.NetworkError | httpcore.ProtocolError):
        return f"{type(exc).__name__}: the receiver could not be reached or did not answer."
    if isinstance(exc, SecretUnreadable):
        # The operator's to fix (docs/security.md, rotating SECRET_KEY), not the user's:
        # said plainly, since the user sees this in their delivery log.
        log.error("webhook attempt: the user's signing secret cannot be decrypted here")
        return (
            "The attempt failed on our side: the signing secret could not be decrypted "
            "(SecretUnreadable); it is retried as usual."
        )
    # Ours (a secret that no longer decrypts, a URL the HTTP layer refuses, a bug):
    # logged for the operator, and retried like any other failed attempt.
    log.warning("webhook attempt failed on our side", exc_info=exc)
    return f"The attempt failed on our side ({type(exc).__name__}); it is retried as usual."


def _attempt(delivery: WebhookDelivery) -> _Result:
    """Check the target, sign and POST. Whatever goes wrong is this attempt's error:
    an exception left to Celery left the delivery pending with no attempt logged."""
    settings = get_settings()
    # One deadline from the start: the DNS lookup of the check is part of the
    # attempt (a resolver that hung held the slot past WEBHOOK_TIMEOUT_S).
    deadline = time.monotonic() + settings.webhook_timeout_s
    try:
        target = check_target(
            delivery.url,
            allow_private=settings.webhook_allow_private_targets,
            timeout=deadline - time.monotonic(),
        )
        answer = _post(target, delivery, _secret(delivery.job_id), deadline)
        status = answer.status_code
        if 200 <= status < 300:
            return _Result(status, final=True)
        if status == 410:
            return _Result(status, "The receiver answered 410 Gone: no more retries.", final=True)
        return _Result(status, f"The receiver answered {status}.", _retry_after_s(answer))
    except _JobGone:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is an attempt's, logged and retried
        return _Result(error=_why(exc))


def _outcome(result: _Result, attempt: int) -> tuple[str, float | None]:
    """The delivery's status after this attempt, and the delay before the next one."""
    if result.final:
        return (SUCCEEDED if result.error is None else FAILED), None
    delay = _next_delay(attempt, result.retry_after)
    return (PENDING if delay is not None else FAILED), delay


def _record(
    delivery: WebhookDelivery, result: _Result, latency_ms: int, outcome: str, delay: float | None
) -> bool:
    with session_scope() as session:
        return record_attempt(
            session=session,
            delivery_id=delivery.id,
            claimed_attempt=delivery.attempts,
            status_code=result.status_code,
            latency_ms=latency_ms,
            error=result.error,
            outcome=outcome,
            retry_in_s=delay,
        )


def deliver(delivery_id: uuid.UUID) -> float | None:
    """Make one attempt; returns the delay before the next one, if any."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return None  # delivered, given up, or not due yet
    started = time.monotonic()
    extra = {"job_id": str(delivery.job_id), "webhook_id": delivery.event_id}
    try:
        result = _attempt(delivery)
    except _JobGone:
        # Logged as a failure on our side, with a traceback, before: a false alarm.
        log.info(
            "webhook %s: its job was deleted meanwhile; nothing sent",
            delivery.event_id,
            extra=extra,
        )
        return None
    latency_ms = int((time.monotonic() - started) * 1000)
    outcome, delay = _outcome(result, delivery.attempts)
    if not _record(delivery, result, latency_ms, outcome, delay):
        # Claimed again since (its lease ran out): the newer attempt's outcome stands.
        log.warning(
            "webhook %s: attempt %d outlived its claim; its outcome is dropped",
            delivery.event_id,
            delivery.attempts,
            extra=extra,
        )
        return None
    log.info(
        "webhook %s of job %s: attempt %d %s",
        delivery.event_id,
        delivery.job_id,
        delivery.attempts,
        outcome if outcome != PENDING else f"failed, retry in {delay:.1f}s",
        extra=extra,
    )
    return delay if outcome == PENDING else None


class DeliverySlots:
    """The deliveries' share of this process's slots, and who holds them.

    A user holding none of them may take any free one; a user holding some may take
    another only while more than `reserve` (a quarter, at least one) stay free. One
    user's receivers that never answer held every slot of the share for their whole
    timeout, attempt after attempt, and everyone else's webhooks waited behind them;
    now they hold at most what the reserve leaves, and a slot they give up goes to
    whoever holds none first. A lone user still uses all but the reserve.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.reserve = max(1, total // 4) if total > 1 else 0
        self._held: Counter[uuid.UUID] = Counter()
        self._lock = threading.Lock()

    def take(self, user_id: uuid.UUID) -> bool:
        with self._lock:
            free = self.total - self._held.total()
            if free <= 0 or (self._held[user_id] and free <= self.reserve):
                return False
            self._held[user_id] += 1
            return True

    def give_back(self, user_id: uuid.UUID) -> None:
        with self._lock:
            self._held[user_id] -= 1
            if self._held[user_id] <= 0:
                del self._held[user_id]


# This process's deliveries in flight, at most WEBHOOK_SLOT_SHARE of its slots: a
# receiver that never answers holds a slot for WEBHOOK_TIMEOUT_S per attempt, and
# one user's hundreds of such deliveries took every slot of a node from the jobs.
# Set once the worker is ready and knows its slots (worker.lifecycle); unset, no bound.
_delivery_slots: DeliverySlots | None = None


def share_slots(slots: int) -> None:
    global _delivery_slots
    _delivery_slots = DeliverySlots(max(1, int(slots * get_settings().webhook_slot_share)))


@contextmanager
def _delivery_slot(user_id: uuid.UUID) -> Iterator[bool]:
    """Whether one of the deliveries' slots is free for this user now; never waited
    for (that holds a job slot)."""
    slots = _delivery_slots
    if slots is None:
        yield True
    elif not slots.take(user_id):
        yield False
    else:
        try:
            yield True
        finally:
            slots.give_back(user_id)


def _postpone(delivery_id: uuid.UUID) -> float | None:
    """Try the delivery later, not counted as an attempt; None when it is not due
    (another message holds it) or done."""
    # A slot frees within WEBHOOK_TIMEOUT_S; spread so the waiting do not come back at once.
    delay = random.uniform(0.2, 1.0) * get_settings().webhook_timeout_s
    with session_scope() as session:
        moved = postpone_delivery(
            session=session, delivery_id=delivery_id, delay=timedelta(seconds=delay)
        )
    if not moved:
        return None
    log.debug("webhook delivery %s: the deliveries' slots are busy; in %.1fs", delivery_id, delay)
    return delay


# A message this much before its delivery is due came early by a node's clock, and is
# sent again for the due time. Further ahead the delivery is held by an attempt under
# way (its lease), whose own outcome sends the next message.
EARLY_S = 5.0


def deliver_when_free(delivery_id: uuid.UUID) -> float | None:
    """deliver(), or, with deliveries' share of the slots in use (or the user's part
    of it), postpone; the delay before the delivery's next message, if it needs one."""
    with session_scope() as session:
        found = pending_delivery_due(session=session, delivery_id=delivery_id)
    if found is None:
        return None  # done, or gone with its job
    user_id, due_in_s = found
    if 0 < due_in_s <= EARLY_S:
        # A retry's message is timed on the clock of the node that sent it, its due
        # time on PostgreSQL's: a node whose clock runs ahead got it early, found it
        # not due and dropped it, and the retry waited for the sweep (minutes).
        return due_in_s + 0.05
    with _delivery_slot(user_id) as free:
        return deliver(delivery_id) if free else _postpone(delivery_id)


def sweep_webhooks() -> int:
    """Send pending deliveries whose time has come but whose message was lost."""
    # Due for at least QUEUED_TIMEOUT_S: its own message would have arrived by now.
    with session_scope() as session:
        due = overdue_deliveries(session=session, overdue_s=get_settings().queued_timeout_s)
    for delivery_id in due:
        enqueue_webhook(delivery_id)
    return len(due)
