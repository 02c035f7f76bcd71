"""Deliver one webhook event: sign, POST, record the attempt, schedule a retry.

Standard Webhooks: `webhook-id` (stable across retries), `webhook-timestamp`,
`webhook-signature` = `v1,<base64 HMAC-SHA256 of id.timestamp.body>` with the
user's `whsec_` secret. Only a 2xx counts; redirects are not followed; 410
Gone stops for good; `Retry-After` is honoured.
"""

from __future__ import annotations

import functools
import logging
import random
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
from standardwebhooks.webhooks import Webhook

from shared.accounts.security import decrypt_secret
from shared.core.config import get_settings
from shared.core.db import session_scope
from shared.models import WebhookDelivery
from shared.queue import enqueue_webhook
from shared.webhooks.deliveries import (
    claim_delivery,
    overdue_deliveries,
    record_attempt,
    secret_of_job_owner,
)
from shared.webhooks.events import FAILED, PENDING, SUCCEEDED
from shared.webhooks.targets import Target, TargetRefused, TargetUnresolvable, check_target

log = logging.getLogger(__name__)


def _claim(delivery_id: uuid.UUID) -> WebhookDelivery | None:
    """Take a due delivery; the lease keeps a duplicate message from sending it twice."""
    lease = timedelta(seconds=get_settings().webhook_timeout_s + 30)
    with session_scope() as session:
        return claim_delivery(session=session, delivery_id=delivery_id, lease=lease)


def _secret(job_id: uuid.UUID) -> str:
    with session_scope() as session:
        user_secret = secret_of_job_owner(session=session, job_id=job_id)
    return decrypt_secret(user_secret)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once per process.

    Building one loads the CA bundle: about 20 ms of CPU, and a new httpx.Client
    builds one unless it is given one (36 ms in all). A delivery's own client
    (no connection reused across receivers) costs under a millisecond with this.
    An SSLContext is safe to share between threads.
    """
    return httpx.create_ssl_context()


def _host_header(target: Target) -> str:
    # An IPv6 literal is bracketed in a Host header as in a URL (RFC 9110, 7.2).
    host = f"[{target.host}]" if ":" in target.host else target.host
    default_port = 443 if target.scheme == "https" else 80
    return host if target.port == default_port else f"{host}:{target.port}"


def _post(target: Target, delivery: WebhookDelivery, secret: str) -> httpx.Response:
    """POST to an address that was checked, not to whatever DNS answers next."""
    address = target.addresses[0]
    host_in_url = f"[{address}]" if ":" in address else address
    url = f"{target.scheme}://{host_in_url}:{target.port}{target.path}"
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(delivery.event_id, now, delivery.payload)
    headers = {
        "Host": _host_header(target),
        "Content-Type": "application/json",
        "User-Agent": "tabpfn-api-webhooks/1",
        "webhook-id": delivery.event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    timeout = get_settings().webhook_timeout_s
    with httpx.Client(verify=tls_context(), timeout=timeout, follow_redirects=False) as client:
        request = client.build_request(
            "POST",
            url,
            content=delivery.payload.encode(),
            headers=headers,
            # TLS must name (and verify) the host, though we connect to its address.
            extensions={"sni_hostname": target.host},
        )
        return client.send(request)


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
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
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: the receiver could not be reached or did not answer."
    # Ours (a secret that no longer decrypts, a URL the HTTP layer refuses, a bug):
    # logged for the operator, and retried like any other failed attempt.
    log.warning("webhook attempt failed on our side", exc_info=exc)
    return f"The attempt failed on our side ({type(exc).__name__}); it is retried as usual."


def _attempt(delivery: WebhookDelivery) -> _Result:
    """Check the target, sign and POST. Whatever goes wrong is this attempt's error:
    an exception left to Celery left the delivery pending with no attempt logged."""
    try:
        target = check_target(
            delivery.url, allow_private=get_settings().webhook_allow_private_targets
        )
        response = _post(target, delivery, _secret(delivery.job_id))
        status = response.status_code
        if 200 <= status < 300:
            return _Result(status, final=True)
        if status == 410:
            return _Result(status, "The receiver answered 410 Gone: no more retries.", final=True)
        return _Result(status, f"The receiver answered {status}.", _retry_after_s(response))
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
) -> None:
    with session_scope() as session:
        record_attempt(
            session=session,
            delivery_id=delivery.id,
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
    result = _attempt(delivery)
    latency_ms = int((time.monotonic() - started) * 1000)
    outcome, delay = _outcome(result, delivery.attempts)
    _record(delivery, result, latency_ms, outcome, delay)
    log.info(
        "webhook %s of job %s: attempt %d %s",
        delivery.event_id,
        delivery.job_id,
        delivery.attempts,
        outcome if outcome != PENDING else f"failed, retry in {delay:.1f}s",
        extra={"job_id": str(delivery.job_id), "webhook_id": delivery.event_id},
    )
    return delay if outcome == PENDING else None


def sweep_webhooks() -> int:
    """Send pending deliveries whose time has come but whose message was lost."""
    # Due for at least QUEUED_TIMEOUT_S: its own message would have arrived by now.
    with session_scope() as session:
        due = overdue_deliveries(session=session, overdue_s=get_settings().queued_timeout_s)
    for delivery_id in due:
        enqueue_webhook(delivery_id)
    return len(due)
