"""Every way the upstream fails, driven through the real stack with the emulator's knobs."""

from __future__ import annotations

import time

import httpx

from emulator.accounts import account_name
from tests.support.api import register, wait_for_job
from tests.support.tokens import fresh_token

TRAIN = {
    "X": [[float(i), "red" if i % 2 else "blue"] for i in range(12)],
    "y": ["low"] * 6 + ["high"] * 6,
    "columns": ["size", "colour"],
}


def _submit(api, headers, path, body) -> str:
    response = api.post(path, json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _fit(api, headers) -> dict:
    job = wait_for_job(
        api, headers, _submit(api, headers, "/jobs/fit", {"task": "classification", "train": TRAIN})
    )
    assert job["status"] == "succeeded", job
    return job


def _wait_until_retrying(api, headers, job_id: str, timeout: float = 60) -> dict:
    """The job's first attempt failed transiently and it waits for its next one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}", headers=headers).json()
        if job["error"] is not None or job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never retried")


def test_token_revoked_after_setup_fails_at_once(api, emulator_knobs):
    headers = register(api, "carol-token")
    emulator_knobs(revoked_tokens=["carol-token"])
    job = wait_for_job(
        api, headers, _submit(api, headers, "/jobs/fit", {"task": "classification", "train": TRAIN})
    )
    assert job["status"] == "failed"
    assert job["error"]["code"] == "upstream_auth_failed"
    assert job["attempts"] == 1  # an auth fault is not retried
    assert "carol-token" not in str(job)
    usage = api.get("/usage", headers=headers)
    assert (usage.status_code, usage.json()["code"]) == (401, "upstream_auth_failed")
    # The stored token was refused, not one just sent: the answer says how to replace it.
    assert "replace it" in usage.json()["detail"], usage.json()


def test_usage_limit_is_quota_exceeded_with_the_reset_time(api, emulator_knobs):
    headers = register(api)
    model_id = _fit(api, headers)["model_id"]
    emulator_knobs(usage_limit=0)
    job = wait_for_job(
        api,
        headers,
        _submit(api, headers, "/jobs/predict", {"model_id": model_id, "X": [[1.0, "red"]]}),
    )
    assert job["status"] == "failed"
    assert job["error"]["code"] == "upstream_quota_exceeded"
    assert "resets at 20" in job["error"]["message"]
    assert job["attempts"] == 1


def test_5xx_is_retried_with_backoff_then_upstream_unavailable(api, stack, emulator_knobs):
    headers = register(api, "alice-token")
    calls_before = len(httpx.get(f"{stack.emulator_url}/_emulator/calls").json())
    emulator_knobs(error_rate=1.0)
    job = wait_for_job(
        api, headers, _submit(api, headers, "/jobs/fit", {"task": "classification", "train": TRAIN})
    )
    assert job["status"] == "failed"
    assert job["error"]["code"] == "upstream_unavailable"
    assert job["attempts"] == 3  # MAX_ATTEMPTS in the test stack
    calls = httpx.get(f"{stack.emulator_url}/_emulator/calls").json()[calls_before:]
    prepares = [
        c
        for c in calls
        if c["path"] == "/tabpfn/prepare_train_set_upload"
        and c["account"] == account_name("alice-token")
    ]
    assert [c["status"] for c in prepares] == [503, 503, 503]


def test_calls_a_failed_run_never_sent_are_given_back_to_the_tokens_budget(api, emulator_knobs):
    """Each attempt of a fit-predict reserves its four calls; one whose fit fails never
    sends its prediction nor the test set. Kept, those entries held the token's
    prediction budget for a window (an hour, in the hour windows) for nothing."""
    headers = register(api)
    emulator_knobs(error_rate=1.0)
    body = {"task": "classification", "train": TRAIN, "test": {"X": [[1.0, "red"]]}}
    job = wait_for_job(api, headers, _submit(api, headers, "/jobs/fit-predict", body))
    assert (job["status"], job["attempts"]) == ("failed", 3), job
    emulator_knobs(error_rate=0.0)
    usage = api.get("/usage", headers=headers)
    assert usage.status_code == 200, usage.text
    counted = {
        w["kind"]: w["used"] for w in usage.json()["rate_windows"] if w["window"] == "minute"
    }
    # Three fits begun (the training upload of each was refused with a 503): counted.
    assert counted == {"fit": 3, "predict": 0, "upload": 3}


def test_a_hung_upstream_times_out_and_the_retry_succeeds(api, emulator_knobs):
    headers = register(api)
    emulator_knobs(hang_s=4.0)  # longer than UPSTREAM_CALL_TIMEOUT_S=3 of the test stack
    job_id = _submit(api, headers, "/jobs/fit", {"task": "classification", "train": TRAIN})
    retrying = _wait_until_retrying(api, headers, job_id)
    assert retrying["error"]["code"] == "upstream_unavailable", retrying
    assert "Timeout" in retrying["error"]["message"]
    emulator_knobs(hang_s=0.0)
    job = wait_for_job(api, headers, job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["error"] is None


def test_model_gone_upstream_is_refitted_from_retained_data(api, stack):
    token = fresh_token()
    headers = register(api, token)
    fit = _fit(api, headers)
    [(upstream_id,)] = stack.sql(
        "select upstream_model_id from fitted_models where id = :id", id=fit["model_id"]
    )
    httpx.delete(
        f"{stack.emulator_url}/delete_dataset/",
        params={"dataset_uid": upstream_id},
        headers={"Authorization": f"Bearer {token}"},
    ).raise_for_status()

    job = wait_for_job(
        api,
        headers,
        _submit(
            api,
            headers,
            "/jobs/predict",
            {"model_id": fit["model_id"], "X": [[1.0, "red"], [10.0, "blue"]]},
        ),
    )
    assert job["status"] == "succeeded", job
    assert "refit" in job["upstream_timings"]
    result = api.get(f"/jobs/{job['id']}/result", headers=headers).json()
    assert result["refitted"] is True
    assert result["predictions"] == ["low", "high"]
    [(new_upstream_id,)] = stack.sql(
        "select upstream_model_id from fitted_models where id = :id", id=fit["model_id"]
    )
    assert new_upstream_id != upstream_id

    # Once the model is gone again and retention deleted its training data: model_not_found.
    httpx.delete(
        f"{stack.emulator_url}/delete_dataset/",
        params={"dataset_uid": new_upstream_id},
        headers={"Authorization": f"Bearer {token}"},
    ).raise_for_status()
    stack.sql(
        "update job_data set train_parquet = null where job_id = :id returning job_id",
        id=fit["id"],
    )
    job = wait_for_job(
        api,
        headers,
        _submit(api, headers, "/jobs/predict", {"model_id": fit["model_id"], "X": [[1.0, "red"]]}),
    )
    assert job["status"] == "failed"
    assert job["error"]["code"] == "model_not_found"
    assert job["attempts"] == 1
    result = api.get(f"/jobs/{job['id']}/result", headers=headers)
    assert (result.status_code, result.json()["code"]) == (409, "result_not_available")


def test_data_over_the_upstream_limits_is_refused_at_submit(api, emulator_knobs):
    headers = register(api)
    too_many_classes = {"X": [[float(i)] for i in range(11)], "y": [f"c{i}" for i in range(11)]}
    too_wide = {"X": [[0.0] * 501, [1.0] * 501], "y": ["a", "b"]}
    for train, limit in [(too_many_classes, "max_classes"), (too_wide, "max_cols")]:
        response = api.post(
            "/jobs/fit", json={"task": "classification", "train": train}, headers=headers
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "limit_exceeded"
        assert response.json()["limit"] == limit
        assert limit in response.json()["detail"]
    emulator_knobs(max_rows=5)
    response = api.post(
        "/jobs/fit", json={"task": "classification", "train": TRAIN}, headers=headers
    )
    assert (response.status_code, response.json()["limit"]) == (422, "train_set_max_rows")
    assert "12" in response.json()["detail"] and "5" in response.json()["detail"]
    assert api.get("/jobs", headers=headers).json()["jobs"] == []


def test_large_predict_sets_are_split_into_chunks_invisibly(api, stack, emulator_knobs):
    headers = register(api, "bob-token")
    model_id = _fit(api, headers)["model_id"]
    rows = [[float(i % 12), "red" if i % 2 else "blue"] for i in range(11)]

    def predict() -> dict:
        body = {"model_id": model_id, "X": rows, "output": "probabilities"}
        return wait_for_job(api, headers, _submit(api, headers, "/jobs/predict", body))

    whole = predict()
    expected = api.get(f"/jobs/{whole['id']}/result", headers=headers).json()

    emulator_knobs(max_rows=4)
    calls_before = len(httpx.get(f"{stack.emulator_url}/_emulator/calls").json())
    chunked = predict()
    assert chunked["status"] == "succeeded", chunked
    assert api.get(f"/jobs/{chunked['id']}/result", headers=headers).json() == expected
    calls = httpx.get(f"{stack.emulator_url}/_emulator/calls").json()[calls_before:]
    predicts = [
        c
        for c in calls
        if c["path"] == "/tabpfn/predict" and c["account"] == account_name("bob-token")
    ]
    assert len(predicts) == 3  # 4 + 4 + 3 rows


def test_usage_reports_the_callers_upstream_usage(api):
    headers = register(api, "alice-token")
    before = api.get("/usage", headers=headers)
    assert before.status_code == 200, before.text
    assert set(before.json()) >= {"current_usage", "usage_limit", "reset_time"}
    model_id = _fit(api, headers)["model_id"]
    wait_for_job(
        api,
        headers,
        _submit(api, headers, "/jobs/predict", {"model_id": model_id, "X": [[1.0, "red"]]}),
    )
    after = api.get("/usage", headers=headers).json()
    assert after["current_usage"] == before.json()["current_usage"] + 1


def _calls(stack, token: str, path: str) -> tuple[int, int]:
    """(answered, refused with 429) calls to `path` by the token's emulator account."""
    calls = httpx.get(f"{stack.emulator_url}/_emulator/calls").json()
    mine = [c for c in calls if c["path"] == path and c["account"] == account_name(token)]
    return sum(c["status"] == 200 for c in mine), sum(c["status"] == 429 for c in mine)


def test_a_full_predict_window_after_the_fit_is_waited_out_without_fitting_again(
    api, stack, emulator_knobs
):
    # The upstream allows one prediction per 3-s window, which the service's own pacing
    # (60 a minute by default) does not know: the second job's predict meets a 429
    # after its fit. It waits in place for the window; handing it back would fit again.
    token = fresh_token()
    headers = register(api, token)
    emulator_knobs(rate_limits=True, predictions_per_minute=1, rate_window_scale=3 / 60)
    body = {"task": "classification", "train": TRAIN, "test": {"X": [[3.0, "red"]]}}
    first = wait_for_job(api, headers, _submit(api, headers, "/jobs/fit-predict", body))
    second = wait_for_job(api, headers, _submit(api, headers, "/jobs/fit-predict", body))

    assert first["status"] == second["status"] == "succeeded", (first, second)
    assert second["attempts"] == 1 and second["error"] is None
    fits, _ = _calls(stack, token, "/tabpfn/fit")
    predicts, refused = _calls(stack, token, "/tabpfn/predict")
    assert refused >= 1, "the upstream never refused a prediction: the test tested nothing"
    assert (fits, predicts) == (2, 2), "a job was fitted twice"
    result = api.get(f"/jobs/{second['id']}/result", headers=headers).json()
    assert result["predictions"] in (["low"], ["high"])
