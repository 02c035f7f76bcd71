"""Idempotent submits, cancel, and retention, through the real stack."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from celery import Celery

from emulator.accounts import account_name
from tests.support.api import register, wait_for_job
from tests.support.tokens import fresh_token

FIT = {
    "task": "classification",
    "train": {"X": [[float(i)] for i in range(8)], "y": ["a"] * 4 + ["b"] * 4},
}


def _fit_calls(stack, token: str) -> int:
    calls = httpx.get(f"{stack.emulator_url}/_emulator/calls").json()
    return sum(c["path"] == "/tabpfn/fit" and c["account"] == account_name(token) for c in calls)


def test_same_idempotency_key_and_body_returns_the_first_job(api, stack):
    token = fresh_token()  # an account of this test's own: it counts the account's jobs
    headers = register(api, token)
    fits_before = _fit_calls(stack, token)
    keyed = {**headers, "Idempotency-Key": "order-42"}
    first = api.post("/jobs/fit", json=FIT, headers=keyed)
    again = api.post("/jobs/fit", json=FIT, headers=keyed)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers

    # Racing retries with one key still make one job.
    with ThreadPoolExecutor(6) as pool:
        racing = list(
            pool.map(
                lambda _: api.post(
                    "/jobs/fit", json=FIT, headers={**headers, "Idempotency-Key": "r"}
                ),
                range(6),
            )
        )
    assert {r.status_code for r in racing} == {202}
    assert len({r.json()["id"] for r in racing}) == 1

    for job_id in (first.json()["id"], racing[0].json()["id"]):
        assert wait_for_job(api, headers, job_id)["status"] == "succeeded"
    assert len(api.get("/jobs", headers=headers).json()["jobs"]) == 2
    assert _fit_calls(stack, token) - fits_before == 2  # one upstream fit per job


def test_same_key_other_body_is_a_conflict_and_keys_are_per_user(api):
    alice, bob = register(api), register(api)  # two accounts of this test's own
    api.post("/jobs/fit", json=FIT, headers={**alice, "Idempotency-Key": "k1"})
    other = {**FIT, "options": {"n_estimators": 2}}
    conflict = api.post("/jobs/fit", json=other, headers={**alice, "Idempotency-Key": "k1"})
    assert (conflict.status_code, conflict.json()["code"]) == (409, "idempotency_conflict")
    # The same key on another route is another request too.
    predict = api.post(
        "/jobs/fit-predict",
        json={**FIT, "test": {"X": [[1.0]]}},
        headers={**alice, "Idempotency-Key": "k1"},
    )
    assert predict.status_code == 409
    # Another user's identical key is theirs alone.
    bobs = api.post("/jobs/fit", json=FIT, headers={**bob, "Idempotency-Key": "k1"})
    assert bobs.status_code == 202
    assert len(api.get("/jobs", headers=alice).json()["jobs"]) == 1


def test_cancel_queued_running_and_finished_jobs(api, stack, emulator_knobs):
    headers = register(api, "carol-token")
    done = wait_for_job(api, headers, api.post("/jobs/fit", json=FIT, headers=headers).json()["id"])
    finished = api.post(f"/jobs/{done['id']}/cancel", headers=headers)
    assert (finished.status_code, finished.json()["code"]) == (409, "job_already_finished")

    # Slow upstream fits (2 s each; submits stay fast) and four jobs ahead of it (two
    # running, two held by the worker's prefetch) keep a fifth job queued to cancel it.
    emulator_knobs(hang_s=2.0)
    busy = [api.post("/jobs/fit", json=FIT, headers=headers).json()["id"] for _ in range(4)]
    waiting = api.post("/jobs/fit", json=FIT, headers=headers).json()["id"]
    canceled = api.post(f"/jobs/{waiting}/cancel", headers=headers)
    assert canceled.status_code == 200, canceled.text
    assert (canceled.json()["status"], canceled.json()["error"]["code"]) == ("canceled", "canceled")

    # Cancel a running one too: it ends canceled, its outcome discarded.
    deadline = time.monotonic() + 30
    while (state := api.get(f"/jobs/{busy[0]}", headers=headers).json())["status"] != "running":
        assert state["status"] == "queued" and time.monotonic() < deadline, state
        time.sleep(0.05)
    assert api.post(f"/jobs/{busy[0]}/cancel", headers=headers).json()["status"] == "canceled"
    for job_id in busy[1:]:
        assert wait_for_job(api, headers, job_id)["status"] == "succeeded"
    time.sleep(3)  # the canceled run's upstream calls come back meanwhile
    stopped = api.get(f"/jobs/{busy[0]}", headers=headers).json()
    assert stopped["status"] == "canceled" and stopped["model_id"] is None
    never_ran = api.get(f"/jobs/{waiting}", headers=headers).json()
    assert (never_ran["status"], never_ran["attempts"], never_ran["started_at"]) == (
        "canceled",
        0,
        None,
    )
    result = api.get(f"/jobs/{waiting}/result", headers=headers)
    assert (result.status_code, result.json()["code"]) == (409, "canceled")
    other = register(api)
    assert api.post(f"/jobs/{busy[1]}/cancel", headers=other).status_code == 404


def test_retention_deletes_data_and_keeps_metadata(api, stack):
    headers = register(api)
    keyed = {**headers, "Idempotency-Key": "old-key"}
    job = wait_for_job(api, headers, api.post("/jobs/fit", json=FIT, headers=keyed).json()["id"])
    assert job["status"] == "succeeded"
    # Age the job and its key past RETENTION_S and IDEMPOTENCY_TTL_S.
    stack.sql(
        "update jobs set finished_at = now() - interval '30 days' where id = :id returning id",
        id=job["id"],
    )
    stack.sql(
        "update idempotency_keys set created_at = now() - interval '2 days' "
        "where job_id = :id returning job_id",
        id=job["id"],
    )

    # The beat schedule sends this hourly; send it now, to the real workers.
    Celery(broker=stack.env["REDIS_URL"]).send_task(
        "data.retention", queue=stack.env["CELERY_QUEUE"]
    )
    deadline = time.monotonic() + 30
    while stack.sql(
        "select result is not null or train_parquet is not null from job_data where job_id = :id",
        id=job["id"],
    )[0][0]:
        assert time.monotonic() < deadline, "retention never ran"
        time.sleep(0.2)

    kept = api.get(f"/jobs/{job['id']}", headers=headers)
    assert kept.status_code == 200 and kept.json()["status"] == "succeeded"
    expired = api.get(f"/jobs/{job['id']}/result", headers=headers)
    assert (expired.status_code, expired.json()["code"]) == (404, "not_found")
    assert "expired" in expired.json()["detail"]
    # The forgotten key makes a new job.
    again = api.post("/jobs/fit", json=FIT, headers=keyed)
    assert again.status_code == 202 and again.json()["id"] != job["id"]


def test_a_model_deleted_while_its_predict_runs_ends_it_as_model_not_found(
    api, stack, emulator_knobs
):
    """The prediction met the upstream's 404 for the deleted copy and failed as
    `upstream_error`; and had the 404 come where tabpfn-client names the model gone,
    the worker would have fitted again what its owner had just deleted."""
    token = fresh_token()
    headers = register(api, token)
    fit = wait_for_job(api, headers, api.post("/jobs/fit", json=FIT, headers=headers).json()["id"])
    fits = _fit_calls(stack, token)
    # Every upstream call waits 2 s before it is handled: the predict's second call
    # (the prediction) is handled about 4 s after the claim, the deletion about 2 s
    # after the job is seen running.
    emulator_knobs(latency_s=2.0)
    body = {"model_id": fit["model_id"], "X": [[1.0], [6.0]]}
    job_id = api.post("/jobs/predict", json=body, headers=headers).json()["id"]
    deadline = time.monotonic() + 20
    while api.get(f"/jobs/{job_id}", headers=headers).json()["status"] == "queued":
        assert time.monotonic() < deadline, "the predict never started"
        time.sleep(0.05)
    assert api.delete(f"/models/{fit['model_id']}", headers=headers).status_code == 204
    ended = wait_for_job(api, headers, job_id)
    assert ended["status"] == "failed", ended
    assert ended["error"]["code"] == "model_not_found", ended
    assert "deleted while this job ran" in ended["error"]["message"]
    assert _fit_calls(stack, token) == fits  # nothing fitted again


def test_an_empty_idempotency_key_is_refused_not_shared_by_every_submit(api):
    """An empty header (a client's unset variable) is a 422 naming it, in JSON and
    uploads alike, and stores nothing: as a key, it made every later submit of the
    account a replay of the first job or an idempotency_conflict."""
    headers = register(api)
    empty = {**headers, "Idempotency-Key": ""}
    other = {**FIT, "options": {"n_estimators": 2}}
    upload = {"data": {"task": "classification", "target": "y"}}
    upload["files"] = {"file": ("t.csv", b"x,y\n1,a\n2,a\n3,b\n4,b\n")}
    for refused in (
        api.post("/jobs/fit", json=FIT, headers=empty),
        api.post("/jobs/fit", json=other, headers=empty),
        api.post("/jobs/fit", headers=empty, **upload),
    ):
        assert (refused.status_code, refused.json()["code"]) == (422, "validation_error")
        assert "Idempotency-Key" in refused.json()["detail"]
    assert api.get("/jobs", headers=headers).json()["jobs"] == []
