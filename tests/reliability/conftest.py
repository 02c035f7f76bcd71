"""The reliability stack, one per module (tests/support/reliability.py): started
before the first test, checked with one fault-free run, stopped after the last."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.embedded import start_embedded_postgres, start_embedded_redis
from cli.ports import free_port
from cli.supervisor import start, wait_for_http
from cli.throwaway import base_env, create_database, migrate
from tests.support.reliability import (
    RELIABILITY_SETTINGS,
    SECRET_KEY,
    TOKENS,
    RelStack,
    register,
)


@pytest.fixture(scope="module")
def rel() -> Iterator[RelStack]:
    # Short and private: unix socket paths must stay under 104 bytes.
    root = Path(tempfile.mkdtemp(prefix="tpa-rel-", dir="/tmp"))
    (root / "logs").mkdir()
    (root / "home").mkdir()
    pg = start_embedded_postgres(root / "pg")
    try:
        rd = start_embedded_redis(root / "redis")
    except BaseException:
        pg.stop()
        raise
    emulator_port, api_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    stack: RelStack | None = None
    try:
        database_url = create_database(pg.url)
        migrate(database_url)
        env = base_env(
            DATABASE_URL=database_url,
            REDIS_URL=rd.celery_url or "",
            SECRET_KEY=SECRET_KEY,
            TABPFN_API_URL=emulator_url,
            EMULATOR_TOKENS=",".join(TOKENS),
            LOG_LEVEL="INFO",
            LOG_FORMAT="text",
            HOME=str(root / "home"),
            # beat keeps its schedule file in the temp dir: keep it ours.
            TMPDIR=str(root),
            **RELIABILITY_SETTINGS,
        )
        stack = RelStack(
            root=root,
            pg=pg,
            redis=rd,
            database_url=database_url,
            env=env,
            emulator_url=emulator_url,
            api_url=f"http://127.0.0.1:{api_port}",
        )
        logs = root / "logs"
        emulator = start("emulator", ["emulator", "--port", str(emulator_port)], env, logs)
        stack.processes.append(emulator)
        api = start("api", ["api", "--port", str(api_port)], env, logs)
        stack.processes.append(api)
        stack.processes.append(start("beat", ["beat"], env, logs))
        worker = stack.start_worker(wait=False)
        wait_for_http(f"{emulator_url}/", emulator, timeout=30)
        wait_for_http(f"{stack.api_url}/healthz", api, timeout=30)
        stack.wait_worker_ready(worker)

        # The answer every faulted run must still give: one run with no fault at all.
        with stack.client() as client:
            user = register(client, TOKENS[0])
            job = user.wait(user.submit(), timeout=60)
            assert job["status"] == "succeeded", job
            stack.reference = user.result(job["id"])
        yield stack
    except BaseException:
        if stack is not None:
            print(stack.logs())
        raise
    finally:
        if stack is not None:
            stack.stop()
        else:
            rd.stop()
            pg.stop()
        if os.environ.get("RELIABILITY_KEEP_LOGS"):
            print(f"reliability stack logs kept in {root / 'logs'}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def baseline(rel: RelStack) -> Iterator[RelStack]:
    """Each test starts from a healthy stack: databases up, one worker node, no knobs."""
    rel.start_postgres()
    rel.start_redis()
    rel.emulator(latency_s=0.0, hang_s=0.0)
    if not rel.live_workers():
        rel.start_worker()
    yield rel
    rel.emulator(latency_s=0.0, hang_s=0.0)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    stack = getattr(item, "funcargs", {}).get("rel")
    if report.when == "call" and report.failed and isinstance(stack, RelStack):
        # The processes' own words: what each one did around the failure.
        report.sections.append(("process logs (reliability stack)", stack.logs()))
    return report
