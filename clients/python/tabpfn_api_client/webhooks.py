"""Verify the service's webhook signatures (Standard Webhooks), with the standard library only.

Each event carries `webhook-id`, `webhook-timestamp` (seconds since the epoch)
and `webhook-signature`: one or more space-separated `v1,<base64 HMAC-SHA256>`
of `"{id}.{timestamp}.{body}"`, keyed with the base64-decoded part of your
`whsec_…` secret.

    event = verify_webhook(request_body_bytes, request_headers, WEBHOOK_SECRET)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

SECRET_PREFIX = "whsec_"
# Events older or newer than this are refused, so a captured request cannot be replayed later.
DEFAULT_TOLERANCE_S = 5 * 60


class WebhookVerificationError(ValueError):
    """The request is not a genuine, fresh event signed with this secret."""


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        key = secret
    else:
        encoded = secret.removeprefix(SECRET_PREFIX)
        try:
            # Standard Webhooks secrets may come unpadded; extra padding is ignored.
            key = base64.b64decode(encoded + "==", validate=False)
        except (binascii.Error, ValueError) as exc:
            raise WebhookVerificationError("The webhook secret is not valid base64.") from exc
    if not key:
        raise WebhookVerificationError("The webhook secret is empty.")
    return key


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign_webhook(secret: str | bytes, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The `webhook-signature` value for an event (for tests of your receiver)."""
    data = body.encode() if isinstance(body, str) else body
    digest = _signature(_key(secret), msg_id, int(timestamp), data)
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """Check an event's signature and age; returns the parsed event.

    `body` must be the raw request body, exactly as received. Raises
    `WebhookVerificationError` for a missing header, a timestamp more than
    `tolerance_s` away from now, or no matching signature.
    """
    data = body.encode() if isinstance(body, str) else bytes(body)
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp_text = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and timestamp_text and signatures):
        raise WebhookVerificationError(
            "Missing a webhook-id, webhook-timestamp or webhook-signature header."
        )
    try:
        timestamp = int(timestamp_text)
    except ValueError as exc:
        raise WebhookVerificationError("webhook-timestamp is not a whole number.") from exc
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("The event's timestamp is too old.")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("The event's timestamp is in the future.")

    expected = _signature(_key(secret), msg_id, timestamp, data)
    matched = False
    for versioned in signatures.split():
        version, _, encoded = versioned.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Compare every candidate (no early exit), each in constant time.
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookVerificationError("No matching signature: wrong secret or altered body.")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise WebhookVerificationError("The event body is not JSON.") from exc
