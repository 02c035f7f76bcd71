"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

import json
import subprocess
import time

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from cli.main import REPO_ROOT
from cli.supervisor import BIN
from cli.throwaway import base_env, create_database, drop_database, migrate
from shared.core.schema_version import HEAD, MIGRATION_LOCK, REVISIONS


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


def _waiting_for_the_lock(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(
            text(
                "select count(*) from pg_locks where locktype = 'advisory' and not granted "
                "and database = (select oid from pg_database where datname = current_database())"
            )
        ).scalar_one()


def test_migrates_started_together_take_turns_and_log_as_configured(services):
    # Two containers starting at once: without the lock, both created the tables.
    url = create_database(services.admin_database_url)
    engine = create_engine(url)
    migrates = []
    try:
        # Held here, so all of them start while another migration runs.
        with engine.connect() as holder:
            holder.execute(text("select pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            holder.commit()
            migrates = [
                subprocess.Popen(
                    [str(BIN), "migrate"],
                    env=base_env(DATABASE_URL=url, LOG_FORMAT="json", LOG_LEVEL="INFO"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )  # fmt: skip
                for _ in range(3)
            ]
            deadline = time.monotonic() + 60
            while _waiting_for_the_lock(engine) < len(migrates):
                exited = [m.returncode for m in migrates if m.poll() is not None]
                assert not exited, f"a migrate did not wait for the lock: exit {exited}"
                assert time.monotonic() < deadline, "the migrates never waited for the lock"
                time.sleep(0.1)
            holder.execute(text("select pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        outputs = [m.communicate(timeout=120)[0] for m in migrates]
        assert [m.returncode for m in migrates] == [0, 0, 0], outputs
        with engine.connect() as connection:
            version = connection.execute(text("select version_num from alembic_version"))
            assert version.scalars().all() == [HEAD]
        lines = [json.loads(line) for out in outputs for line in out.splitlines() if line]
        messages = [line["message"] for line in lines]
        assert sum(m.startswith("Running upgrade  -> 0001") for m in messages) == 1, messages
        assert {"time", "level", "logger"} <= set(lines[0])
        assert "waiting for it to end" in " ".join(messages)
    finally:
        for migrate_process in migrates:
            migrate_process.kill()
            migrate_process.wait()
        engine.dispose()
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


def test_the_model_metadata_migration_gives_models_their_fit_jobs_labels(services):
    url = create_database(services.admin_database_url)
    engine = create_engine(url)
    try:
        command.upgrade(_config(url), "0007_job_metadata")
        with engine.begin() as connection:
            user = connection.execute(
                text(
                    "INSERT INTO users (id, tabpfn_token_encrypted, webhook_secret_encrypted) "
                    "VALUES (gen_random_uuid(), 'x', 'y') RETURNING id"
                )
            ).scalar_one()
            jobs = {}
            for name, labels in (("labelled", '{"name": "churn"}'), ("plain", None)):
                jobs[name] = connection.execute(
                    text(
                        "INSERT INTO jobs (id, user_id, type, status, params, attempts, labels) "
                        "VALUES (gen_random_uuid(), :user, 'fit', 'succeeded', '{}', 1, "
                        "CAST(:labels AS jsonb)) RETURNING id"
                    ),
                    {"user": user, "labels": labels},
                ).scalar_one()
                connection.execute(
                    text(
                        "INSERT INTO fitted_models (id, user_id, fit_job_id, task, options, "
                        "upstream_model_id, columns, n_rows, n_features) VALUES "
                        "(gen_random_uuid(), :user, :job, 'classification', '{}', 'u', "
                        "'[\"x\"]', 4, 1)"
                    ),
                    {"user": user, "job": jobs[name]},
                )
        command.upgrade(_config(url), "head")
        with engine.connect() as connection:
            found = dict(
                connection.execute(text("SELECT fit_job_id, labels FROM fitted_models")).all()
            )
        assert found == {jobs["labelled"]: {"name": "churn"}, jobs["plain"]: None}
        # A worker of the release before, which stores models without labels, still
        # stores them with their fit jobs' (a rolling upgrade); labels given are kept.
        with engine.begin() as connection:
            for labels in (None, '{"name": "given"}'):
                connection.execute(
                    text(
                        "INSERT INTO fitted_models (id, user_id, fit_job_id, task, options, "
                        "upstream_model_id, columns, n_rows, n_features, labels) VALUES "
                        "(gen_random_uuid(), :user, :job, 'classification', '{}', 'v', "
                        "'[\"x\"]', 4, 1, CAST(:labels AS jsonb))"
                    ),
                    {"user": user, "job": jobs["labelled"], "labels": labels},
                )
        with engine.connect() as connection:
            stored = connection.execute(
                text("SELECT labels FROM fitted_models WHERE upstream_model_id = 'v'")
            ).scalars()
            assert sorted(label["name"] for label in stored) == ["churn", "given"]
    finally:
        engine.dispose()
        drop_database(services.admin_database_url, url)
