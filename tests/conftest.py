"""Session fixtures every kind of test may use: real PostgreSQL and Redis, and a
migrated database. Helpers live in tests/support/ (nothing imports from here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from cli.throwaway import Services, create_database, drop_database, find_services, migrate

_used_services: list[str] = []


@pytest.fixture(scope="session")
def services(tmp_path_factory) -> Iterator[Services]:
    with ExitStack() as stack:
        found = find_services(stack, tmp_path_factory.mktemp("services"))
        _used_services.append(found.origin)
        yield found


def pytest_terminal_summary(terminalreporter):
    if _used_services:
        terminalreporter.write_line(f"services used: {_used_services[0]}")


@pytest.fixture(scope="session")
def database_url(services: Services) -> Iterator[str]:
    url = create_database(services.admin_database_url)
    try:
        migrate(url)
        yield url
    finally:
        drop_database(services.admin_database_url, url)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # A fixture may look at its test's outcome (request.node.rep_call), e.g. to
    # print a stack's logs when the test failed.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
