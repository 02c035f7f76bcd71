"""Per-key request limits and a brake on clients guessing API keys, kept in Redis.

Fixed one-minute windows: simple, shared by every API process, and cheap
(one INCR per request). When Redis is unreachable the limits are not applied:
they protect the service, they are not worth an outage of their own.
"""

from __future__ import annotations

import contextlib
import logging
import time

import redis

from shared.core.config import get_settings
from shared.core.errors import RateLimited
from shared.core.redis_client import get_redis

log = logging.getLogger(__name__)
WINDOW_S = 60


def _hit(bucket: str, limit: int, *, count: bool = True) -> None:
    if limit <= 0:
        return
    window = int(time.time() // WINDOW_S)
    name = f"tabpfn-api:rl:{bucket}:{window}"
    try:
        client = get_redis()
        if count:
            pipe = client.pipeline()
            pipe.incr(name)
            pipe.expire(name, WINDOW_S * 2)
            used = pipe.execute()[0]
        else:
            used = int(client.get(name) or 0)
    except redis.RedisError as exc:
        log.warning("rate limiting skipped: Redis unavailable (%s)", type(exc).__name__)
        return
    if used > limit:
        retry_after = WINDOW_S - int(time.time()) % WINDOW_S
        raise RateLimited(f"Too many requests; retry in {retry_after} s.", retry_after=retry_after)


def check_key_rate(key_id: str) -> None:
    """Count one request of an authenticated key against RATE_LIMIT_PER_MINUTE."""
    _hit(f"key:{key_id}", get_settings().rate_limit_per_minute)


def check_bad_auth_brake(client_ip: str) -> None:
    """Refuse a client that sent too many invalid keys lately (without counting)."""
    _hit(f"badauth:{client_ip}", get_settings().bad_auth_per_minute, count=False)


def record_bad_auth(client_ip: str) -> None:
    # This request is refused as unauthorized anyway; only the count matters.
    with contextlib.suppress(RateLimited):
        _hit(f"badauth:{client_ip}", get_settings().bad_auth_per_minute)
