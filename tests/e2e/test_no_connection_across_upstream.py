"""No route holds a pooled database connection while it waits on the upstream.

An API process with a pool of one connection (DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0)
and an upstream that takes LATENCY_S to answer: while `/usage`, a token
replacement or a model deletion waits on TabPFN, `GET /jobs` on the same process
must still get the one connection at once. Were it held, the list would wait for
the upstream's answer (or the pool's 30 s timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.api import register, wait_for_job
from tests.support.stacks import extra_api_url
from tests.support.tokens import fresh_token

LATENCY_S = 4.0
TRAIN = {"X": [[0.0], [1.0], [2.0], [3.0], [10.0], [11.0], [12.0], [13.0]], "y": [0] * 4 + [1] * 4}


@pytest.fixture(scope="module")
def one_connection_api(stack, tmp_path_factory):
    yield from extra_api_url(
        stack, tmp_path_factory, "one-connection", DB_POOL_SIZE="1", DB_MAX_OVERFLOW="0"
    )


def _list_while(url: str, headers: dict, slow: Callable[[], httpx.Response]) -> httpx.Response:
    """GET /jobs while `slow` waits on the upstream; returns the slow call's response."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(slow)
        time.sleep(LATENCY_S / 4)  # the slow call has authenticated and waits upstream
        assert not pending.done(), pending.result().text
        started = time.monotonic()
        listed = httpx.get(f"{url}/jobs", headers=headers, timeout=60)
        elapsed = time.monotonic() - started
        still_waiting = not pending.done()
        response = pending.result()
    assert listed.status_code == 200, listed.text
    assert still_waiting and elapsed < LATENCY_S / 2, f"GET /jobs waited {elapsed:.1f}s"
    return response


def test_usage(api, one_connection_api, emulator_knobs):
    headers = register(api)
    emulator_knobs(latency_s=LATENCY_S)
    response = _list_while(
        one_connection_api,
        headers,
        lambda: httpx.get(f"{one_connection_api}/usage", headers=headers, timeout=60),
    )
    assert response.status_code == 200, response.text


def test_token_replacement(api, one_connection_api, emulator_knobs):
    headers = register(api)
    new_token = fresh_token()
    emulator_knobs(latency_s=LATENCY_S)
    response = _list_while(
        one_connection_api,
        headers,
        lambda: httpx.put(
            f"{one_connection_api}/auth/tabpfn-token",
            json={"tabpfn_token": new_token},
            headers=headers,
            timeout=60,
        ),
    )
    assert response.status_code == 204, response.text


def test_model_deletion(api, one_connection_api, emulator_knobs):
    headers = register(api)
    job = api.post("/jobs/fit", json={"task": "classification", "train": TRAIN}, headers=headers)
    assert job.status_code == 202, job.text
    fitted = wait_for_job(api, headers, job.json()["id"])
    assert fitted["status"] == "succeeded", fitted
    model_id = fitted["model_id"]
    emulator_knobs(latency_s=LATENCY_S)
    response = _list_while(
        one_connection_api,
        headers,
        lambda: httpx.delete(
            f"{one_connection_api}/models/{model_id}", headers=headers, timeout=60
        ),
    )
    assert response.status_code == 204, response.text
    assert response.headers["Upstream-Deleted"] == "true"
    assert api.get(f"/models/{model_id}", headers=headers).status_code == 404
