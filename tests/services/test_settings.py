"""DATABASE_URL and REDIS_URL as providers hand them out, and one line for a bad one."""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from cli.supervisor import BIN
from cli.throwaway import base_env, create_database, drop_database
from shared.core.connection_urls import normalize_database_url, normalize_redis_url


@pytest.mark.parametrize(
    "given",
    [
        "postgres://u:p@db.example:5432/app",
        "postgresql://u:p@db.example:5432/app",
        "postgresql+psycopg2://u:p@db.example:5432/app",
        "POSTGRES://u:p@db.example:5432/app",
    ],
)
def test_every_postgres_spelling_means_psycopg2(given: str) -> None:
    assert normalize_database_url(given) == "postgresql+psycopg2://u:p@db.example:5432/app"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("rediss://:pw@cache.example:6380/0", "rediss://:pw@cache.example:6380/0"),
        ("redis+socket:///run/redis.sock", "redis+socket:///run/redis.sock"),
        ("unix:///run/redis.sock", "redis+socket:///run/redis.sock"),
    ],
)
def test_redis_forms_become_what_celery_takes(given: str, expected: str) -> None:
    assert normalize_redis_url(given) == expected


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN), *args], env=base_env(SECRET_KEY="k", **env), capture_output=True, text=True,
        timeout=60, cwd="/",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DATABASE_URL", "mysql://root:hunter2@db/app", "DATABASE_URL must start with"),
        ("DATABASE_URL", "db.example:5432/app", "DATABASE_URL must start with"),
        ("REDIS_URL", "amqp://guest:hunter2@mq//", "REDIS_URL must start with"),
    ],
)
def test_another_scheme_is_one_line_naming_the_variable(variable, value, expected) -> None:
    settings = {"DATABASE_URL": "postgres://x/y", "REDIS_URL": "redis://x", variable: value}
    done = _run(["api"], **settings)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tabpfn-api api: {expected}"), done.stderr
    assert "hunter2" not in done.stderr  # the URL's password is never echoed


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        # A traceback from logging's setup, before.
        ("LOG_LEVEL", "verbose", "LOG_LEVEL: Input should be 'DEBUG', 'INFO'"),
        ("LOG_FORMAT", "jsn", "LOG_FORMAT: Input should be 'text' or 'json'"),  # text, before
        # Accepted before: each running job was taken for lost and ran twice.
        ("LEASE_TIMEOUT_S", "5", "LEASE_TIMEOUT_S (5) must be at least twice HEARTBEAT"),
        # Accepted before: the first failed delivery raised and stayed pending.
        ("WEBHOOK_RETRY_SCHEDULE_S", "5s,30s", "WEBHOOK_RETRY_SCHEDULE_S must be seconds"),
        ("HEARTBEAT_INTERVAL_S", "0", "HEARTBEAT_INTERVAL_S: Input should be greater than 0"),
        ("RETENTION_S", "-1", "RETENTION_S: Input should be greater than 0"),
        # Accepted before: a retry past the data's deletion replayed a job without its result.
        ("IDEMPOTENCY_TTL_S", "700000", "IDEMPOTENCY_TTL_S (700000) must not exceed RETENTION_S"),
    ],
)
def test_a_setting_no_process_can_work_with_is_one_line(variable, value, expected) -> None:
    done = _run(["api"], DATABASE_URL="postgres://x/y", REDIS_URL="redis://x", **{variable: value})
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tabpfn-api api: {expected}"), done.stderr


def test_an_idempotency_key_is_forgotten_no_later_than_its_jobs_data() -> None:
    from shared.core.config import Settings

    assert Settings(_env_file=None, retention_s=7 * 86400).idempotency_ttl_s == 86400
    assert Settings(_env_file=None, retention_s=3600).idempotency_ttl_s == 3600
    assert Settings(_env_file=None, retention_s=3600, idempotency_ttl_s=60).idempotency_ttl_s == 60


def test_migrate_accepts_the_urls_providers_hand_out(services) -> None:
    for scheme in ("postgres", "postgresql"):
        url = create_database(services.admin_database_url)
        try:
            given = make_url(url).set(drivername=scheme).render_as_string(hide_password=False)
            done = _run(["migrate"], DATABASE_URL=given)
            assert done.returncode == 0, done.stderr
            engine = create_engine(url)
            assert "users" in inspect(engine).get_table_names()
            engine.dispose()
        finally:
            drop_database(services.admin_database_url, url)


def test_flower_names_every_missing_variable_and_the_dev_stack() -> None:
    done = _run(["flower"])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "tabpfn-api flower: REDIS_URL and FLOWER_BASIC_AUTH are not set: export them or put "
        "them in .env (see .env.example). For the dev stack, `tabpfn-api dev` runs Flower "
        "itself and prints its URL and login."
    ]


def test_a_taken_port_stops_the_api_in_one_line() -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _run(
            ["api", "--port", str(port)], DATABASE_URL="postgres://x/y", REDIS_URL="redis://x"
        )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"tabpfn-api api: port {port} on 127.0.0.1 is already in use")
    assert "`tabpfn-api api --port " in lines[0]
