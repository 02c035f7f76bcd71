"""What operators see: /metrics from Postgres, request ids, and structured logs."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from cli.ports import free_port
from cli.supervisor import Child
from tests.support.api import register, wait_for_job
from tests.support.metrics import scrape, value

TRAIN = {"X": [[1.0], [2.0], [3.0], [4.0]], "y": ["a", "a", "b", "b"]}


def test_metrics_count_a_finished_job(api, stack):
    before = scrape(f"{stack.api_url}/metrics")
    headers = register(api)
    job = api.post("/jobs/fit", json={"task": "classification", "train": TRAIN}, headers=headers)
    assert wait_for_job(api, headers, job.json()["id"])["status"] == "succeeded"
    after = scrape(f"{stack.api_url}/api/v1/metrics")

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tabpfn_api_jobs_created_total", type="fit") == 1
    assert grew("tabpfn_api_jobs_finished_total", type="fit", status="succeeded") == 1
    assert grew("tabpfn_api_jobs", type="fit", status="succeeded") == 1
    for duration in ("queue_wait", "run", "upstream"):
        name = f"tabpfn_api_job_{duration}_seconds"
        assert grew(f"{name}_count", type="fit", status="succeeded") == 1
        assert value(after, f"{name}_bucket", type="fit", status="succeeded", le="+Inf") >= 1
    assert ("tabpfn_api_queue_depth", frozenset()) in after
    assert ("tabpfn_api_broker_queue_length", frozenset()) in after
    assert ("tabpfn_api_webhook_deliveries", frozenset({("status", "failed")})) in after
    # The API process's own metrics come along.
    assert any(name.startswith("process_") for name, _ in after)


def test_every_response_carries_a_request_id(stack):
    fresh = httpx.get(f"{stack.api_url}/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])

    given = httpx.get(f"{stack.api_url}/api/v1/jobs", headers={"X-Request-ID": "trace-42.a"})
    assert given.status_code == 401
    assert given.headers["x-request-id"] == "trace-42.a"
    # The stack's API logs text (LOG_FORMAT's default): the line names the id too.
    api = next(p for p in stack.processes if p.name == "api")
    deadline = time.monotonic() + 5
    while "api.request [trace-42.a] GET /api/v1/jobs 401" not in api.log():
        assert time.monotonic() < deadline, api.log()[-3000:]
        time.sleep(0.1)

    for unsafe in ["x" * 65, "has space", "tpa_0123456789abcdef_" + "y" * 43]:
        response = httpx.get(f"{stack.api_url}/healthz", headers={"X-Request-ID": unsafe})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


@pytest.fixture(scope="module")
def json_api(stack, tmp_path_factory):
    """An API process that logs JSON, beside the main one (same database and Redis)."""
    with stack.extra_api(
        "api-json", tmp_path_factory.mktemp("js"), LOG_FORMAT="json", LOG_LEVEL="INFO"
    ) as (url, process):
        yield url.removesuffix("/api/v1"), process


def _json_lines(process: Child, request_ids: set[str], timeout: float = 5) -> list[dict]:
    """Every line of the log parsed, once a line for each of `request_ids` is there."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(line) for line in process.log().splitlines() if line.strip()]
        seen = {line.get("request_id") for line in lines if line.get("logger") == "api.request"}
        if request_ids <= seen or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_json_logs_have_one_line_per_request_and_no_secret(api, json_api):
    url, process = json_api
    headers = register(api)
    api_key = headers["Authorization"].removeprefix("Bearer ")
    calls = {
        "ok-1": ("/api/v1/jobs", headers, 200),
        "unauthorized-1": ("/api/v1/jobs", {"Authorization": "Bearer tpa_nope"}, 401),
        "missing-1": ("/api/v1/jobs/00000000-0000-0000-0000-000000000000", headers, 404),
    }
    for request_id, (path, auth, status) in calls.items():
        response = httpx.get(f"{url}{path}", headers={**auth, "X-Request-ID": request_id})
        assert response.status_code == status

    lines = _json_lines(process, set(calls))
    requests = {line["request_id"]: line for line in lines if line.get("logger") == "api.request"}
    for request_id, (_, _, status) in calls.items():
        line = requests[request_id]
        assert line["status"] == status
        assert line["method"] == "GET"
        assert isinstance(line["duration_ms"], float)
        assert {"time", "level", "message"} <= set(line)
    assert requests["ok-1"]["path"] == "/api/v1/jobs"
    assert requests["missing-1"]["path"] == "/api/v1/jobs/{job_id}"
    assert requests["ok-1"]["api_key_id"] == api_key.split("_")[1]
    assert "api_key_id" not in requests["unauthorized-1"]
    log = process.log()
    assert api_key not in log and "tpa_nope" not in log and "demo-token" not in log


def test_the_worker_logs_each_job_transition_with_its_id(api, stack):
    headers = register(api)
    job_id = api.post(
        "/jobs/fit", json={"task": "classification", "train": TRAIN}, headers=headers
    ).json()["id"]
    assert wait_for_job(api, headers, job_id)["status"] == "succeeded"
    worker = next(p for p in stack.processes if p.name == "worker")
    # The API may answer "succeeded" a moment before the worker's line is flushed.
    deadline = time.monotonic() + 5
    while f"job {job_id}: succeeded" not in worker.log():
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.1)
    assert f"job {job_id}: claimed (attempt 1)" in worker.log()


def test_metrics_answer_503_while_the_database_is_down(stack, tmp_path):
    dead = free_port()
    with stack.extra_api(
        "api-no-db",
        tmp_path,
        DATABASE_URL=f"postgresql+psycopg2://nobody@127.0.0.1:{dead}/none",
        REDIS_URL=f"redis://127.0.0.1:{dead}/0",
    ) as (url, _):
        response = httpx.get(f"{url}/metrics", timeout=30)
    assert (response.status_code, response.json()["code"]) == (503, "service_unavailable")
    assert response.headers["x-request-id"]


def test_metrics_ask_for_their_token_when_one_is_set(stack, tmp_path):
    """Published with the API, /metrics answered anyone: each scrape writes and
    aggregates, and tells the fleet's job counts."""
    with stack.extra_api("api-metrics-token", tmp_path, METRICS_TOKEN="scrape-secret") as (
        url,
        _,
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-secret"}):
            refused = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
            assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")
            assert "scrape-secret" not in refused.text
        scraped = httpx.get(
            f"{url}/metrics", headers={"Authorization": "Bearer scrape-secret"}, timeout=30
        )
    assert scraped.status_code == 200 and "tabpfn_api_jobs" in scraped.text, scraped.text[:300]
