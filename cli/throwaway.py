"""What the test suite and the benchmarks share to run stacks they throw away.

Which PostgreSQL and Redis to use: DATABASE_URL/REDIS_URL when set; else the
servers on 127.0.0.1 when they answer; else private embedded servers, so both
run on a bare machine. On that server, a fresh database per stack, migrated
with the command a deployment runs, and dropped after. The environment the
stack's children start from, and the upstream limits that pace nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cli.supervisor import BIN

# The published per-token limits (60 fits a minute) would pace a run's many
# jobs per token; tests and benchmark sections about pacing set their own.
UNPACED = {
    "UPSTREAM_FITS_PER_MINUTE": "100000",
    "UPSTREAM_PREDICTIONS_PER_MINUTE": "100000",
    "UPSTREAM_UPLOADS_PER_MINUTE": "100000",
    "UPSTREAM_FITS_PER_HOUR": "1000000",
    "UPSTREAM_PREDICTIONS_PER_HOUR": "1000000",
    "UPSTREAM_UPLOADS_PER_HOUR": "1000000",
}


def base_env(**values: str) -> dict[str, str]:
    """This process's environment without its TabPFN and emulator settings, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TABPFN_", "EMULATOR_"))}
    env.update(values)
    return env


def answers(port: int) -> bool:
    """Whether a server listens on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Services:
    admin_database_url: str  # a database to connect to for CREATE/DROP DATABASE
    redis_url: str  # the URL Celery and the service use
    origin: str


def find_services(stack: ExitStack, scratch: Path, redis_db: int | None = None) -> Services:
    """`redis_db`: the db number on the local Redis (1-14), else one at random."""
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    # TABPFN_API_TEST_EMBEDDED=1 proves the bare-machine path on a machine that has servers.
    local = os.environ.get("TABPFN_API_TEST_EMBEDDED") != "1"
    origin = []
    if not database_url:
        if local and answers(5432):
            database_url = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
            origin.append("postgres@127.0.0.1")
        else:
            from cli.embedded import start_embedded_postgres

            database_url = stack.enter_context(start_embedded_postgres(scratch / "pg")).url
            origin.append("embedded postgres")
    if not redis_url:
        if local and answers(6379):
            # A db number of our own, so parallel runs and dev data don't mix.
            db = redis_db if redis_db is not None else uuid.uuid4().int % 14 + 1
            redis_url = f"redis://127.0.0.1:6379/{db}"
            origin.append("redis@127.0.0.1")
        else:
            from cli.embedded import start_embedded_redis

            redis_url = stack.enter_context(start_embedded_redis(scratch / "redis")).celery_url
            origin.append("embedded redis")
    return Services(database_url, redis_url, ", ".join(origin) or "from environment")


def create_database(admin_url: str) -> str:
    """A fresh, uniquely named database; returns its URL."""
    name = f"tabpfn_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    engine.dispose()


def migrate(url: str) -> None:
    """Upgrade `url` to head with the real command a deployment runs."""
    subprocess.run(
        [str(BIN), "migrate"],
        env=base_env(DATABASE_URL=url),
        check=True,
        capture_output=True,
        timeout=120,
    )


def throwaway_database(stack: ExitStack, services: Services) -> str:
    """A fresh, migrated database on `services`, dropped when `stack` closes."""
    url = create_database(services.admin_database_url)
    stack.callback(drop_database, services.admin_database_url, url)
    migrate(url)
    return url


def stack_env(
    database_url: str,
    redis_url: str,
    secret_key: str,
    emulator_url: str,
    tokens: list[str],
    **values: str,
) -> dict[str, str]:
    """What every process of a throwaway stack shares: its database and Redis, its
    SECRET_KEY, the emulator as the upstream and the tokens the emulator accepts."""
    return base_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SECRET_KEY=secret_key,
        TABPFN_API_URL=emulator_url,
        EMULATOR_TOKENS=",".join(tokens),
        **values,
    )
