"""A redis-py client for the same Redis that Celery uses as its broker.

Celery spells a unix socket `redis+socket:///path`, redis-py `unix:///path`;
REDIS_URL may be either (the embedded dev Redis is a socket).
"""

from __future__ import annotations

from functools import lru_cache

import redis

from shared.core.config import get_settings


def redis_py_url(url: str) -> str:
    if url.startswith("redis+socket://"):
        return "unix://" + url.removeprefix("redis+socket://")
    if url.startswith("socket://"):
        return "unix://" + url.removeprefix("socket://")
    return url


@lru_cache
def get_redis() -> redis.Redis:
    settings = get_settings().require("REDIS_URL")
    # Short timeouts: a Redis outage must not stall requests that only use it
    # for rate limiting. A bounded pool: a worker's 64 jobs share a few
    # connections (each use takes a millisecond), waiting briefly when all are busy.
    pool = redis.BlockingConnectionPool.from_url(
        redis_py_url(settings.redis_url),
        max_connections=settings.redis_max_connections,
        timeout=2,
        socket_timeout=1,
        socket_connect_timeout=1,
    )
    return redis.Redis(connection_pool=pool)


def open_connections(count: int) -> None:
    """Open up to `count` pooled connections now (the pool's bound caps it), then keep them.

    For a worker's warm-up: a burst of first jobs should not each wait for a
    connect and redis-py's handshake. Raises when Redis is down.
    """
    pool = get_redis().connection_pool
    held = []
    try:
        for _ in range(min(count, pool.max_connections)):
            held.append(pool.get_connection())  # connected and checked by the pool
    finally:
        for connection in held:
            pool.release(connection)
