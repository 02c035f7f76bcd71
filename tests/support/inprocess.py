"""Service code run inside the test process against real PostgreSQL and Redis.

Settings, the engine and the Redis client are built once per process and
cached; `configured` points them at a fresh migrated database for one test
module and restores them afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from cli.throwaway import Services, create_database, drop_database, migrate
from shared.core.config import get_settings
from shared.core.db import get_engine, get_sessionmaker
from shared.core.redis_client import get_redis


def _clear() -> None:
    for cached in (get_settings, get_sessionmaker, get_redis):
        cached.cache_clear()
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()


@contextmanager
def configured(services: Services, **settings: str) -> Iterator[str]:
    """A migrated database and this process's settings pointing at it; yields its URL."""
    url = create_database(services.admin_database_url)
    migrate(url)
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": services.redis_url,
        "SECRET_KEY": f"in-process-{uuid.uuid4().hex}",
        **settings,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        _clear()
        try:
            yield url
        finally:
            _clear()
    _clear()
    drop_database(services.admin_database_url, url)
