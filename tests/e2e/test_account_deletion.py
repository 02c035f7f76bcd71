"""DELETE /auth/me: an account and everything the service holds for it, at once; its
models' copies in the TabPFN account too; unfinished jobs stopped, their waiters
answered 401; other accounts untouched; the same token free to set up anew."""

from __future__ import annotations

import threading
import time

import httpx

from emulator.accounts import account_name
from tests.support.api import register, wait_for_job
from tests.support.metrics import scrape, value
from tests.support.tokens import fresh_token

FIT = {
    "task": "classification",
    "train": {"X": [[float(i)] for i in range(6)], "y": ["a"] * 3 + ["b"] * 3},
}
# Every table that holds a user's rows, and how to find them.
OWNED = {
    "users": "id = :user_id",
    "api_keys": "user_id = :user_id",
    "jobs": "user_id = :user_id",
    "fitted_models": "user_id = :user_id",
    "idempotency_keys": "user_id = :user_id",
    "job_data": "job_id IN (SELECT unnest(CAST(:job_ids AS uuid[])))",
    "webhook_deliveries": "job_id IN (SELECT unnest(CAST(:job_ids AS uuid[])))",
}


def _rows_left(stack, user_id: str, job_ids: list[str]) -> dict[str, int]:
    return {
        table: stack.sql(
            f"SELECT count(*) FROM {table} WHERE {where}", user_id=user_id, job_ids=job_ids
        )[0][0]
        for table, where in OWNED.items()
    }


def _upstream_deletes(stack, token: str) -> list[int]:
    calls = httpx.get(f"{stack.emulator_url}/_emulator/calls").json()
    return [
        c["status"]
        for c in calls
        if c["path"] == "/delete_dataset/" and c["account"] == account_name(token)
    ]


def test_deleting_an_account_removes_everything_here_and_its_models_upstream(api, stack):
    bystander = register(api)
    their_model = wait_for_job(
        api, bystander, api.post("/jobs/fit", json=FIT, headers=bystander).json()["id"]
    )["model_id"]

    token = fresh_token()
    headers = register(api, token)
    user_id = api.get("/auth/me", headers=headers).json()["user_id"]
    second_key = api.post("/auth/keys", headers=headers).json()["api_key"]
    second = {"Authorization": f"Bearer {second_key}"}
    keyed = {**headers, "Idempotency-Key": "before-deletion"}
    hook = {**FIT, "callback_url": "http://127.0.0.1:9/hook"}  # a delivery row, never answered
    job_ids = [
        api.post("/jobs/fit", json=FIT, headers=keyed).json()["id"],
        api.post("/jobs/fit", json=hook, headers=headers).json()["id"],
    ]
    for job_id in job_ids:
        assert wait_for_job(api, headers, job_id)["status"] == "succeeded"
    before = _rows_left(stack, user_id, job_ids)
    assert before == {
        "users": 1,
        "api_keys": 2,
        "jobs": 2,
        "fitted_models": 2,
        "idempotency_keys": 1,
        "job_data": 2,
        "webhook_deliveries": 1,
    }, before

    deleted = api.delete("/auth/me", headers=headers)
    assert deleted.status_code == 204, deleted.text
    assert deleted.headers["Upstream-Deleted"] == "true"

    assert _rows_left(stack, user_id, job_ids) == dict.fromkeys(OWNED, 0)
    # Each model's copy was there to delete (a second delete of one would be a 404).
    assert _upstream_deletes(stack, token) == [200, 200]
    for key in (headers, second):
        refused = api.get("/auth/me", headers=key)
        assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")
    again = api.delete("/auth/me", headers=headers)
    assert (again.status_code, again.json()["code"]) == (401, "unauthorized")

    # The other account keeps what it had.
    assert [m["id"] for m in api.get("/models", headers=bystander).json()] == [their_model]
    # The token sets up a new, empty account.
    fresh = api.post("/auth/setup", json={"tabpfn_token": token})
    assert (fresh.status_code, fresh.json()["account"]) == (201, "new")
    assert fresh.json()["user_id"] != user_id
    anew = {"Authorization": f"Bearer {fresh.json()['api_key']}"}
    assert api.get("/jobs", headers=anew).json()["jobs"] == []
    reused = api.post("/jobs/fit", json=FIT, headers={**anew, "Idempotency-Key": "before-deletion"})
    assert reused.status_code == 202 and reused.json()["id"] not in job_ids


def test_unfinished_jobs_stop_and_their_waiters_are_answered_401(api, stack, emulator_knobs):
    emulator_knobs(hang_s=2.0)  # each fit call stalls: the jobs are still running
    headers = register(api)
    user_id = api.get("/auth/me", headers=headers).json()["user_id"]
    job_ids = [api.post("/jobs/fit", json=FIT, headers=headers).json()["id"] for _ in range(2)]
    deadline = time.monotonic() + 30
    while api.get(f"/jobs/{job_ids[0]}", headers=headers).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    answers: list[httpx.Response] = []

    def wait_for_it() -> None:
        answers.append(api.get(f"/jobs/{job_ids[0]}", params={"wait": 30}, headers=headers))

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.5)  # the long-poll is waiting
    before = scrape(f"{stack.api_url}/metrics")
    assert api.delete("/auth/me", headers=headers).status_code == 204
    after = scrape(f"{stack.api_url}/metrics")
    # Woken by the deletion, not by the long-poll's 5-s re-check timer.
    waiter.join(timeout=4)
    assert not waiter.is_alive(), "the waiter was not woken"
    assert (answers[0].status_code, answers[0].json()["code"]) == (401, "unauthorized")

    # /metrics: the two jobs ended canceled, and the counters built from the rows that
    # went did not go down (a counter that drops reads as a restart to Prometheus).
    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tabpfn_api_jobs_finished_total", type="fit", status="canceled") == 2
    assert grew("tabpfn_api_jobs_created_total", type="fit") == 0

    # The runs' upstream calls come back meanwhile: their outcomes are discarded, not
    # stored under a user that is gone, and the workers go on serving others.
    time.sleep(4)
    assert _rows_left(stack, user_id, job_ids) == dict.fromkeys(OWNED, 0)
    emulator_knobs(hang_s=0.0)
    other = register(api)
    done = wait_for_job(api, other, api.post("/jobs/fit", json=FIT, headers=other).json()["id"])
    assert done["status"] == "succeeded"
    worker = next(p for p in stack.processes if p.name == "worker")
    assert f"job {job_ids[0]}: claim lost" in worker.log()
