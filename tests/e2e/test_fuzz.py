"""Schema-driven fuzzing of the whole API: no input may produce a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.api import register

SCHEMATHESIS = Path(sys.executable).parent / "st"


@pytest.fixture(scope="module")
def fuzz_api(stack, tmp_path_factory):
    """An API process without rate limits, so the fuzzer's many requests (and its
    deliberately broken credentials) are all answered rather than braked."""
    with stack.extra_api(
        "api-fuzz",
        tmp_path_factory.mktemp("fz"),
        RATE_LIMIT_PER_MINUTE="0",
        BAD_AUTH_PER_MINUTE="0",
    ) as (url, process):
        yield url.removesuffix("/api/v1"), process


def test_fuzzing_every_operation_finds_no_server_error(api, fuzz_api, tmp_path):
    url, process = fuzz_api
    headers = register(api)
    done = subprocess.run(
        [
            str(SCHEMATHESIS), "run", f"{url}/openapi.json",
            "--checks", "not_a_server_error",
            "--header", f"Authorization: {headers['Authorization']}",
            "--max-examples", "15",
            "--seed", "20261122",
            "--request-timeout", "30",
            "--report-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"{done.stdout[-8000:]}\n{done.stderr[-2000:]}\n{process.log()[-4000:]}"
    )
    assert "passed" in done.stdout.lower()
