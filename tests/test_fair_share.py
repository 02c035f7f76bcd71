"""Scheduling through the whole stack: a flood from one user never starves another.

Real processes (emulator, API, a threads-pool worker, beat), the real
tabpfn-client, real PostgreSQL and Redis. The emulator answers every call
after a fixed latency, so a job takes about a second, as a small job does on
the TabPFN cloud.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import register, wait_for_job
from tests.support.stacks import running_stack

TOKENS = ["flood-token", "small-token"]
SLOTS = 4
CAP = 2


@pytest.fixture(scope="module")
def fair_stack(services, tmp_path_factory):
    from tests.services import create_database, drop_database, migrate

    url = create_database(services.admin_database_url)
    migrate(url)
    try:
        with running_stack(
            services=services,
            database_url=url,
            scratch=tmp_path_factory.mktemp("fair"),
            secret_key=f"fair-{uuid.uuid4().hex}",
            tokens=TOKENS,
            worker_args=("--concurrency", str(SLOTS)),
            beat=True,
            MAX_RUNNING_PER_USER=str(CAP),
            EMULATOR_LATENCY_S="0.15",
            SWEEPER_INTERVAL_S="2",
        ) as stack:
            yield stack
    finally:
        drop_database(services.admin_database_url, url)


@pytest.fixture
def client(fair_stack, request):
    with httpx.Client(base_url=f"{fair_stack.api_url}/api/v1", timeout=30) as api:
        yield api
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(fair_stack.logs())


BODY = {
    "task": "classification",
    "train": {"X": [[i, i % 3] for i in range(20)], "y": [i % 2 for i in range(20)]},
    "test": {"X": [[1, 1], [2, 0]]},
}


def submit(api: httpx.Client, headers: dict) -> str:
    response = api.post("/jobs/fit-predict", json=BODY, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def run_one(api: httpx.Client, headers: dict) -> float:
    started = time.monotonic()
    job = wait_for_job(api, headers, submit(api, headers), timeout=120)
    assert job["status"] == "succeeded", job
    return time.monotonic() - started


def test_a_small_user_is_not_starved_by_a_flood(client):
    flood, small = register(client, "flood-token"), register(client, "small-token")
    idle = min(run_one(client, small) for _ in range(2))

    with ThreadPoolExecutor(8) as pool:
        flood_ids = list(pool.map(lambda _: submit(client, flood), range(30)))
    # The flood is queued far beyond the cap: its jobs wait, and say why.
    time.sleep(1.0)
    shown = [client.get(f"/jobs/{j}", headers=flood).json() for j in flood_ids[-5:]]
    assert {j["status"] for j in shown} == {"queued"}
    reasons = [j["waiting"]["reason"] for j in shown]
    # (A job of theirs may end between two reads: for that moment, they wait for a slot.)
    assert set(reasons) <= {"fair_share", "capacity"} and "fair_share" in reasons, reasons

    busy = run_one(client, small)

    running = [client.get(f"/jobs/{j}", headers=flood).json()["status"] for j in flood_ids].count(
        "running"
    )
    assert running <= CAP
    # A free slot is there for the small user at once: at most a small multiple of idle.
    assert busy < 3 * idle + 1.0, (busy, idle)
    for job_id in flood_ids:
        assert wait_for_job(client, flood, job_id, timeout=180)["status"] == "succeeded"
