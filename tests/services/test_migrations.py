"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

import subprocess

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from cli.main import REPO_ROOT
from cli.supervisor import BIN
from cli.throwaway import base_env, create_database, drop_database, migrate
from shared.core.schema_version import REVISIONS


def _config(url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    return config


def test_migrate_then_check_finds_no_drift_and_downgrade_round_trips(services):
    url = create_database(services.admin_database_url)
    try:
        migrate(url)
        engine = create_engine(url)
        tables = set(inspect(engine).get_table_names())
        assert {"users", "api_keys", "jobs", "job_data", "fitted_models"} <= tables
        command.check(_config(url))  # raises if the models and the migrations differ
        command.downgrade(_config(url), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        command.upgrade(_config(url), "head")
        command.check(_config(url))
        engine.dispose()
    finally:
        drop_database(services.admin_database_url, url)


def test_the_readiness_check_knows_every_migration():
    # /readyz compares the database's revision with this list (shared/core/schema_version.py).
    scripts = ScriptDirectory.from_config(_config("postgresql://unused/none"))
    chain = [script.revision for script in reversed(list(scripts.walk_revisions()))]
    assert list(REVISIONS) == chain, "list the new migration in schema_version.REVISIONS"


def test_production_commands_name_the_missing_setting():
    # Every missing variable at once, not one per attempt.
    for args, missing in [
        (["api"], "DATABASE_URL, SECRET_KEY and REDIS_URL are not set: export them"),
        (["worker"], "DATABASE_URL, SECRET_KEY and REDIS_URL are not set: export them"),
        (["migrate"], "DATABASE_URL is not set: export it"),
    ]:
        done = subprocess.run(
            [str(BIN), *args], env=base_env(), capture_output=True, text=True, timeout=60, cwd="/"
        )
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"tabpfn-api {args[0]}: {missing} or put {'them' if 'are' in missing else 'it'} "
            "in .env (see .env.example)."
        ]
    done = subprocess.run(
        [str(BIN), "api"],
        env=base_env(DATABASE_URL="postgresql://x/y"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert "SECRET_KEY and REDIS_URL are not set" in done.stderr


def test_invalid_scheduling_settings_are_refused_in_one_line():
    for name, value, words in [
        ("MAX_RUNNING_PER_USER", "0", "Input should be greater than 0"),
        ("UPSTREAM_FITS_PER_MINUTE", "-5", "Input should be greater than 0"),
        (
            "WORKER_CONCURRENCY",
            "many",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
    ]:
        done = subprocess.run(
            [str(BIN), "worker"],
            env=base_env(**{name: value}),
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [f"tabpfn-api worker: {name}: {words}"]
