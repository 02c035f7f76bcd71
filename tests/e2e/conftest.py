"""The session's whole stack (emulator, API, workers) and a client on its API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from cli.throwaway import Services, throwaway_database
from tests.support.stacks import Stack, api_client, running_stack
from tests.support.tokens import FRESH_TOKENS, SECRET_KEY, TOKENS


@pytest.fixture(scope="session")
def stack_database_url(services: Services) -> Iterator[str]:
    """The session stack's own database: the services tests' counts (/metrics totals)
    read the whole of theirs, and under `make test` a process may run some of both."""
    with ExitStack() as cleanup:
        yield throwaway_database(cleanup, services)


@pytest.fixture(scope="session")
def stack(services: Services, stack_database_url: str, tmp_path_factory) -> Iterator[Stack]:
    with running_stack(
        services=services,
        database_url=stack_database_url,
        scratch=tmp_path_factory.mktemp("stack"),
        secret_key=SECRET_KEY,
        tokens=[*TOKENS, *FRESH_TOKENS],
        # The API's pool as deployed (the other stacks open 2): the races and bursts of
        # the API's tests (test_request_burst, test_security) are about its real size.
        # Its workers keep 2 each: every process opens its whole pool as it warms up,
        # and two of these stacks run at once under `make test` (PostgreSQL: 100).
        api_settings={"DB_POOL_SIZE": "10"},
    ) as running:
        yield running


@pytest.fixture
def api(stack: Stack, request) -> Iterator[httpx.Client]:
    with api_client(stack, request) as client:
        yield client


@pytest.fixture
def emulator_knobs(stack: Stack) -> Iterator:
    """Change the emulator's knobs for one test; they are restored afterwards."""
    url = f"{stack.emulator_url}/_emulator/config"
    original = httpx.get(url).json()

    def change(**knobs) -> None:
        httpx.patch(url, json=knobs).raise_for_status()

    yield change
    httpx.patch(url, json={**original, "revoked_tokens": []}).raise_for_status()
