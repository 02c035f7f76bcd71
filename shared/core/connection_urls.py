"""DATABASE_URL and REDIS_URL in the forms providers and tools hand out.

Providers (Heroku, Render, Supabase, Railway…) give `postgres://` or
`postgresql://`; SQLAlchemy would read the first as an unknown dialect and the
second as psycopg 3, which is not installed. Both mean PostgreSQL through the
psycopg2 driver we ship. Redis URLs are checked the same way, so a typo stops
the process at start-up with one line instead of a traceback at the first job.
"""

from __future__ import annotations

from urllib.parse import urlsplit

POSTGRES_DRIVER_SCHEME = "postgresql+psycopg2"
# Every spelling of PostgreSQL we accept; all are served by psycopg2.
_POSTGRES_SCHEMES = {"postgres", "postgresql", POSTGRES_DRIVER_SCHEME}
# redis-py and kombu/Celery each know a different pair of socket spellings;
# shared.core.redis_client and Celery translate between them.
REDIS_SCHEMES = ("redis", "rediss", "redis+socket", "unix")


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower() if "://" in url else ""


def normalize_database_url(url: str) -> str:
    """The SQLAlchemy URL for psycopg2; ValueError naming DATABASE_URL otherwise."""
    scheme = _scheme(url)
    if scheme not in _POSTGRES_SCHEMES:
        shown = f"{scheme}://" if scheme else "a URL without a scheme"
        raise ValueError(
            f"DATABASE_URL must start with postgresql:// or postgres:// (got {shown}); "
            "e.g. postgresql://user:password@host:5432/dbname"
        )
    return POSTGRES_DRIVER_SCHEME + url[len(scheme) :]


def normalize_redis_url(url: str) -> str:
    """REDIS_URL as Celery takes it (`unix://` becomes `redis+socket://`); ValueError otherwise."""
    scheme = _scheme(url)
    if scheme not in REDIS_SCHEMES:
        shown = f"{scheme}://" if scheme else "a URL without a scheme"
        raise ValueError(
            "REDIS_URL must start with redis://, rediss:// (TLS), redis+socket:// or unix:// "
            f"(got {shown}); e.g. redis://localhost:6379/0"
        )
    if scheme == "unix":
        return "redis+socket" + url[len(scheme) :]
    return url
