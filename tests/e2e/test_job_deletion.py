"""DELETE /jobs/{id}: a finished job and its data go at once, through the real stack;
an unfinished one is refused until canceled; the counters of /metrics hold."""

from __future__ import annotations

import time

from tests.support.api import register, wait_for_job
from tests.support.metrics import scrape, value

FIT = {
    "task": "classification",
    "train": {"X": [[float(i)] for i in range(6)], "y": ["a"] * 3 + ["b"] * 3},
}
FIT_PREDICT = {**FIT, "test": {"X": [[1.5], [4.5]]}}
# The rows a job owns, besides its own.
OWNED = {
    "jobs": "id = :job_id",
    "job_data": "job_id = :job_id",
    "webhook_deliveries": "job_id = :job_id",
    "idempotency_keys": "job_id = :job_id",
}


def _rows(stack, job_id: str) -> dict[str, int]:
    return {
        table: stack.sql(f"SELECT count(*) FROM {table} WHERE {where}", job_id=job_id)[0][0]
        for table, where in OWNED.items()
    }


def test_a_finished_job_and_everything_of_it_go_at_once(api, stack):
    headers = register(api)
    before = scrape(f"{stack.api_url}/metrics")  # folds every job ended so far
    keyed = {**headers, "Idempotency-Key": "nightly-2026-12-06"}
    body = {**FIT_PREDICT, "callback_url": "http://127.0.0.1:9/hook"}  # a delivery row
    job_id = api.post("/jobs/fit-predict", json=body, headers=keyed).json()["id"]
    done = wait_for_job(api, headers, job_id)
    assert done["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while _rows(stack, job_id)["webhook_deliveries"] == 0:
        assert time.monotonic() < deadline, "no delivery row was recorded"
        time.sleep(0.1)
    assert _rows(stack, job_id) == {k: 1 for k in OWNED}
    fit_id = api.post("/jobs/fit", json=FIT, headers=headers).json()["id"]
    model_id = wait_for_job(api, headers, fit_id)["model_id"]

    # No scrape between the job's end and its deletion: /metrics must count it anyway.
    assert api.delete(f"/jobs/{job_id}", headers=headers).status_code == 204
    assert _rows(stack, job_id) == dict.fromkeys(OWNED, 0)
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/result", f"/jobs/{job_id}/webhooks"):
        gone = api.get(path, headers=headers)
        assert (gone.status_code, gone.json()["code"]) == (404, "not_found"), path
    again = api.delete(f"/jobs/{job_id}", headers=headers)
    assert (again.status_code, again.json()["code"]) == (404, "not_found")
    assert [j["id"] for j in api.get("/jobs", headers=headers).json()["jobs"]] == [fit_id]
    after = scrape(f"{stack.api_url}/metrics")

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tabpfn_api_jobs_finished_total", type="fit_predict", status="succeeded") == 1
    assert grew("tabpfn_api_jobs_created_total", type="fit_predict") == 1

    # Its Idempotency-Key went with it: the same key makes a new job.
    anew = api.post("/jobs/fit-predict", json=body, headers=keyed)
    assert anew.status_code == 202 and "Idempotent-Replayed" not in anew.headers
    assert anew.json()["id"] != job_id
    wait_for_job(api, headers, anew.json()["id"])  # no job of this test outlives it

    # A fit's model outlives its job, and still predicts.
    assert api.delete(f"/jobs/{fit_id}", headers=headers).status_code == 204
    assert api.get(f"/models/{model_id}", headers=headers).json()["fit_job_id"] == fit_id
    predict = api.post("/jobs/predict", json={"model_id": model_id, "X": [[2.0]]}, headers=headers)
    assert wait_for_job(api, headers, predict.json()["id"])["status"] == "succeeded"


def test_an_unfinished_job_is_refused_until_canceled_and_others_jobs_are_not_found(
    api, emulator_knobs
):
    emulator_knobs(hang_s=60.0)  # each fit call hangs until the knob goes back to 0
    headers = register(api)
    job_id = api.post("/jobs/fit", json=FIT, headers=headers).json()["id"]
    refused = api.delete(f"/jobs/{job_id}", headers=headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "job_not_finished"
    assert refused.json()["job_status"] in ("queued", "running")
    assert "cancel it first" in refused.json()["detail"]
    assert api.get(f"/jobs/{job_id}", headers=headers).status_code == 200

    stranger = register(api)
    foreign = api.delete(f"/jobs/{job_id}", headers=stranger)
    assert (foreign.status_code, foreign.json()["code"]) == (404, "not_found")

    assert api.post(f"/jobs/{job_id}/cancel", headers=headers).status_code == 200
    assert api.delete(f"/jobs/{job_id}", headers=headers).status_code == 204
    assert api.get(f"/jobs/{job_id}", headers=headers).status_code == 404
    emulator_knobs(hang_s=0.0)


def test_pages_follow_on_when_the_last_job_of_a_page_was_deleted(api):
    """The cleanup loop: list a page, delete its jobs, ask for the next page."""
    headers = register(api)
    ids = [api.post("/jobs/fit", json=FIT, headers=headers).json()["id"] for _ in range(3)]
    for job_id in ids:
        wait_for_job(api, headers, job_id)
    # A page that holds the last job has no cursor (it had one when full).
    whole = api.get("/jobs?limit=3", headers=headers).json()
    assert (len(whole["jobs"]), whole["next_cursor"]) == (3, None)
    first = api.get("/jobs?limit=2", headers=headers).json()
    assert [j["id"] for j in first["jobs"]] == ids[:0:-1]
    for job in first["jobs"]:
        assert api.delete(f"/jobs/{job['id']}", headers=headers).status_code == 204
    following = api.get(f"/jobs?limit=2&before={first['next_cursor']}", headers=headers)
    assert following.status_code == 200, following.text  # was 404: its anchor was gone
    assert [j["id"] for j in following.json()["jobs"]] == [ids[0]]
    assert following.json()["next_cursor"] is None

    # A bare job id, as documented first, is still a cursor; a mangled one is a 422.
    newer = api.post("/jobs/fit", json=FIT, headers=headers).json()["id"]
    wait_for_job(api, headers, newer)
    by_id = api.get(f"/jobs?before={newer}", headers=headers).json()
    assert [j["id"] for j in by_id["jobs"]] == [ids[0]]
    for bad in ("not-a-cursor", f"{newer}_soon", f"{newer}_99999999999999999999999"):
        refused = api.get("/jobs", params={"before": bad}, headers=headers)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["code"] == "validation_error"
