"""/readyz is ready only on a database migrated to this release, and a database error's
503 leaves its reason in the log: one API process on a database of its own, which the
test migrates step by step."""

from __future__ import annotations

import time

import httpx
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from cli.main import REPO_ROOT
from cli.throwaway import create_database, drop_database, migrate
from shared.core.schema_version import HEAD

# Well-formed, so the API looks it up in the database; it matches no row.
API_KEY = f"tpa_{'0' * 16}_{'k' * 43}"


def _upgrade(url: str, revision: str) -> None:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, revision)


def _sql(url: str, statement: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(statement))
    engine.dispose()


def _readyz(api_url: str) -> tuple[int, str]:
    response = httpx.get(f"{api_url}/readyz", timeout=15)
    return response.status_code, response.json()["checks"]["database"]


def test_readyz_waits_for_the_migrations_and_database_errors_are_logged(stack, services, tmp_path):
    url = create_database(services.admin_database_url)
    try:
        # PostgreSQL is shared by the whole suite: this process needs few connections.
        settings = {"DATABASE_URL": url, "DB_POOL_SIZE": "2"}
        with stack.extra_api("api-unmigrated", tmp_path, **settings) as (api, process):
            base = api.removesuffix("/api/v1")
            status, database = _readyz(base)
            assert (status, database) == (503, "not migrated: run `tabpfn-api migrate`")
            body = httpx.get(f"{base}/readyz").json()
            assert body["code"] == "service_unavailable" and body["checks"]["redis"] == "ok"

            # A route that reaches the missing tables: a clean 503, and the log says why,
            # with the request id, the traceback once, and no key.
            answers = [
                httpx.get(
                    f"{api}/jobs",
                    headers={"Authorization": f"Bearer {API_KEY}", "X-Request-ID": f"db-{n}"},
                )
                for n in range(2)
            ]
            for response in answers:
                assert response.status_code == 503, response.text
                assert response.json()["code"] == "service_unavailable"
            deadline = time.monotonic() + 5
            while "[db-1]" not in process.log():
                assert time.monotonic() < deadline, process.log()[-3000:]
                time.sleep(0.1)
            log = process.log()
            reason = 'ProgrammingError (SQLSTATE 42P01): relation "api_keys" does not exist'
            for request_id in ("db-0", "db-1"):
                line = f"ERROR api.errors [{request_id}] database error, answered 503 "
                assert f"{line}service_unavailable: {reason}" in log
            assert f"api.errors.DatabaseFailure: {reason}" in log
            assert log.count("DatabaseFailure") == 1, "one traceback per kind of failure a minute"
            assert API_KEY not in log and API_KEY[21:] not in log

            _upgrade(url, "0002_token_fingerprint")
            status, database = _readyz(base)
            assert status == 503
            assert database.startswith("schema at revision 0002_token_fingerprint, this release")
            assert database.endswith(f" needs {HEAD}: run `tabpfn-api migrate`")

            migrate(url)
            assert _readyz(base) == (200, "ok")

            # A later release migrated first (a rolling upgrade): this one stays ready.
            _sql(url, "update alembic_version set version_num = '9999_a_later_release'")
            assert _readyz(base) == (200, "ok")
    finally:
        drop_database(services.admin_database_url, url)
