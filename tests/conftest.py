"""Session fixtures: real PostgreSQL and Redis, the emulator, the API and workers."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.services import Services, create_database, drop_database, find_services, migrate
from tests.stack import Stack
from tests.support.stacks import running_stack
from tests.support.tokens import FRESH_TOKENS, fresh_token  # noqa: F401  (re-exported)

# Tokens the emulator accepts: one TabPFN account each.
TOKENS = ["demo-token", "alice-token", "bob-token", "carol-token", "dave-token"]
# Unique per run: token fingerprints (and so pacing budgets in Redis) of parallel
# runs sharing one Redis never meet.
# (Kept in the environment: this module may be imported twice, as `conftest` by
# pytest and as `tests.conftest` by tests, and both must agree.)
SECRET_KEY = "test-secret-key-not-for-production-" + os.environ.setdefault(
    "TABPFN_API_TEST_RUN", uuid.uuid4().hex[:8]
)


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


@pytest.fixture(scope="session")
def stack(services: Services, database_url: str, tmp_path_factory) -> Iterator[Stack]:
    with running_stack(
        services=services,
        database_url=database_url,
        scratch=tmp_path_factory.mktemp("stack"),
        secret_key=SECRET_KEY,
        tokens=[*TOKENS, *FRESH_TOKENS],
    ) as running:
        yield running


@pytest.fixture
def api(stack: Stack, request) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{stack.api_url}/api/v1", timeout=30) as client:
        yield client
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(stack.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def emulator_knobs(stack: Stack) -> Iterator:
    """Change the emulator's knobs for one test; they are restored afterwards."""
    url = f"{stack.emulator_url}/_emulator/config"
    original = httpx.get(url).json()

    def change(**knobs) -> None:
        httpx.patch(url, json=knobs).raise_for_status()

    yield change
    httpx.patch(url, json={**original, "revoked_tokens": []}).raise_for_status()


# Every secret the suite was handed, for the test that searches logs and data for them.
ISSUED_SECRETS: list[str] = []


def register(api: httpx.Client, token: str | None = None) -> dict[str, str]:
    """Sign up with a TabPFN token (by default a fresh one: an account of the
    test's own); returns the Authorization header to use."""
    token = token or fresh_token()
    response = api.post("/auth/setup", json={"tabpfn_token": token})
    assert response.status_code == 201, response.text
    ISSUED_SECRETS.extend([response.json()["api_key"], response.json()["webhook_secret"], token])
    return {"Authorization": f"Bearer {response.json()['api_key']}"}


def wait_for_job(api: httpx.Client, headers: dict, job_id: str, timeout: float = 90) -> dict:
    """Poll until the job has finished; returns its final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")
