"""Session fixtures every kind of test may use: real PostgreSQL and Redis, and a
migrated database. Helpers live in tests/support/ (nothing imports from here)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import pytest

from cli.throwaway import Services, find_services, throwaway_database

_used_services: list[str] = []


@pytest.fixture(scope="session")
def services(tmp_path_factory) -> Iterator[Services]:
    with ExitStack() as stack:
        found = find_services(
            stack, tmp_path_factory.mktemp("services"), redis_db=_local_redis_db()
        )
        found = _own_redis_db(found)
        _used_services.append(found.origin)
        yield found


def pytest_collection_modifyitems(config, items):
    # Under xdist, the reliability tests first: the longest file (2-3 min), on servers
    # of its own, so it starts while the other process runs everything else rather
    # than last, with the other process idle. Every process sorts alike (xdist
    # requires the same collection everywhere); the rest keep the suite's order.
    if _xdist_worker() is not None:
        items.sort(key=lambda item: not item.nodeid.startswith("tests/reliability/"))


def _xdist_worker() -> int | None:
    """This process's number under pytest-xdist (`make test` runs several), else None."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name.removeprefix("gw")) if name.startswith("gw") else None


def _local_redis_db() -> int | None:
    # Every worker of one run on its own db of the local Redis: Celery queues and
    # wake-up channels are per db, and two workers' stacks must not share them.
    # A random start per run (the run's id is the same in every worker), so
    # parallel runs seldom meet either.
    worker = _xdist_worker()
    if worker is None:
        return None
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")
    start = int(hashlib.sha256(run.encode()).hexdigest(), 16)
    return (start + worker) % 14 + 1


def _own_redis_db(found: Services) -> Services:
    # A REDIS_URL given to a parallel run: each worker one db number further on.
    worker = _xdist_worker()
    if not worker or not os.environ.get("REDIS_URL"):
        return found
    url = urlsplit(found.redis_url)
    if url.scheme not in ("redis", "rediss"):
        return found  # a unix socket's db is a query parameter; run such a Redis serially
    db = int(url.path.strip("/") or 0)
    return replace(found, redis_url=urlunsplit(url._replace(path=f"/{(db + worker) % 16}")))


def pytest_sessionfinish(session):
    # An xdist worker hands what it used to the controller, which prints the summary.
    output = getattr(session.config, "workeroutput", None)
    if output is not None and _used_services:
        output["services_used"] = _used_services[0]


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without it runs too
def pytest_testnodedown(node, error):
    used = getattr(node, "workeroutput", {}).get("services_used")
    if used and used not in _used_services:
        _used_services.append(used)


def pytest_terminal_summary(terminalreporter):
    if _used_services:
        terminalreporter.write_line(f"services used: {'; '.join(_used_services)}")


@pytest.fixture(scope="session")
def database_url(services: Services) -> Iterator[str]:
    with ExitStack() as cleanup:
        yield throwaway_database(cleanup, services)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # A fixture may look at its test's outcome (request.node.rep_call), e.g. to
    # print a stack's logs when the test failed.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
