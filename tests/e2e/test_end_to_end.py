"""The whole chain, for real: HTTP → API → Postgres → Redis → Celery worker
processes → tabpfn-client → emulator, and back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from emulator.accounts import account_name
from tests.support.api import register, wait_for_job
from tests.support.tokens import fresh_token

# Two well-separated classes, a text column and missing values in both kinds.
IRIS_LIKE = {
    "X": [
        [5.1, "red", 1.4],
        [4.9, "red", None],
        [4.7, None, 1.3],
        [5.0, "red", 1.5],
        [4.6, "red", 1.4],
        [6.4, "blue", 4.5],
        [6.9, "blue", 4.9],
        [5.5, "blue", None],
        [6.5, None, 4.6],
        [6.3, "blue", 4.7],
    ],
    "y": ["setosa"] * 5 + ["versicolor"] * 5,
    "columns": ["sepal_length", "colour", "petal_length"],
}


def _submit(api: httpx.Client, headers: dict, path: str, body: dict) -> dict:
    response = api.post(path, json=body, headers=headers)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert job["links"]["self"] == f"/api/v1/jobs/{job['id']}"
    return job


def _run(api: httpx.Client, headers: dict, path: str, body: dict) -> tuple[dict, dict]:
    job = wait_for_job(api, headers, _submit(api, headers, path, body)["id"])
    assert job["status"] == "succeeded", job
    result = api.get(f"/jobs/{job['id']}/result", headers=headers)
    assert result.status_code == 200, result.text
    return job, result.json()


def test_classification_with_string_labels_and_probabilities(api):
    headers = register(api)
    fit_job, fit = _run(api, headers, "/jobs/fit", {"task": "classification", "train": IRIS_LIKE})
    assert fit_job["attempts"] == 1
    assert fit_job["upstream_timings"]["fit"]["elapsed_s"] >= 0
    assert fit["classes"] == ["setosa", "versicolor"]
    assert (fit["n_rows"], fit["n_features"]) == (10, 3)
    assert fit_job["model_id"] == fit["model_id"]

    test_records = [
        {"sepal_length": 5.0, "colour": "red", "petal_length": 1.4},
        {"sepal_length": 6.6, "colour": "blue", "petal_length": None},
        {"sepal_length": 4.8, "colour": None, "petal_length": 1.5},
    ]
    _, predicted = _run(
        api,
        headers,
        "/jobs/predict",
        {"model_id": fit["model_id"], "X": test_records, "output": "probabilities"},
    )
    assert predicted["classes"] == ["setosa", "versicolor"]
    assert predicted["predictions"] == ["setosa", "versicolor", "setosa"]
    assert len(predicted["probabilities"]) == 3
    for row, label in zip(predicted["probabilities"], predicted["predictions"], strict=True):
        assert abs(sum(row) - 1) < 1e-6
        assert predicted["classes"][row.index(max(row))] == label

    models = api.get("/models", headers=headers).json()
    assert [m["id"] for m in models] == [fit["model_id"]]


def test_integer_labels_come_back_as_integers(api):
    headers = register(api)
    body = {
        "task": "classification",
        "train": {"X": [[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]], "y": [0, 0, 0, 7, 7, 7]},
        "test": {"X": [[0.05], [5.05]]},
    }
    _, result = _run(api, headers, "/jobs/fit-predict", body)
    assert result["predictions"] == [0, 7]
    assert result["classes"] == [0, 7]


def test_regression_fit_then_predict_mean(api):
    headers = register(api)
    train = {"X": [[float(i), i % 3] for i in range(20)], "y": [2.0 * i + 1 for i in range(20)]}
    _, fit = _run(api, headers, "/jobs/fit", {"task": "regression", "train": train})
    assert "classes" not in fit
    _, predicted = _run(
        api, headers, "/jobs/predict", {"model_id": fit["model_id"], "X": [[3.0, 0], [15.0, 0]]}
    )
    low, high = predicted["predictions"]
    assert 3 < low < 12 and 24 < high < 35  # near 7 and 31: a model, not a constant


def test_fit_predict_quantiles(api):
    headers = register(api)
    body = {
        "task": "regression",
        "train": {"X": [[float(i)] for i in range(15)], "y": [float(i) for i in range(15)]},
        "test": {"X": [[2.0], [12.0]]},
        "output": "quantiles",
        "quantiles": [0.1, 0.5, 0.9],
    }
    job, result = _run(api, headers, "/jobs/fit-predict", body)
    assert job["type"] == "fit_predict"
    assert set(result["quantiles"]) == {"0.1", "0.5", "0.9"}
    for row in range(2):
        low, mid, high = (result["quantiles"][q][row] for q in ("0.1", "0.5", "0.9"))
        assert low <= mid <= high
    assert result["predictions"] == result["quantiles"]["0.5"]
    # The fit of a fit-predict job is a model the user can predict with again.
    assert api.get(f"/models/{result['model_id']}", headers=headers).status_code == 200


def test_without_the_median_asked_for_the_prediction_is_still_the_median(api):
    """Of quantiles [0.05, 0.95] the prediction was the 0.95 one, which the CLI and
    the console scored as the prediction."""
    headers = register(api)
    train = {"X": [[float(i), i % 4] for i in range(40)], "y": [2.0 * i + i % 4 for i in range(40)]}
    _, fit = _run(api, headers, "/jobs/fit", {"task": "regression", "train": train})
    X = [[3.0, 1], [20.0, 2], [33.0, 0]]
    ask = {"model_id": fit["model_id"], "X": X}
    _, banded = _run(
        api, headers, "/jobs/predict", {**ask, "output": "quantiles", "quantiles": [0.05, 0.95]}
    )
    _, median = _run(api, headers, "/jobs/predict", {**ask, "output": "median"})
    assert set(banded["quantiles"]) == {"0.05", "0.95"}
    assert banded["predictions"] == pytest.approx(median["predictions"])
    low, high = banded["quantiles"]["0.05"], banded["quantiles"]["0.95"]
    assert all(lo <= p <= hi for lo, p, hi in zip(low, banded["predictions"], high, strict=True))
    assert banded["predictions"] != high


def test_two_users_at_once_each_with_their_own_token(api, stack):
    # Accounts of this test's own (setup with a known token recovers its account).
    alice_token, bob_token = fresh_token(), fresh_token()
    alice, bob = register(api, alice_token), register(api, bob_token)
    calls_before = len(httpx.get(f"{stack.emulator_url}/_emulator/calls").json())
    body = {"task": "classification", "train": IRIS_LIKE, "test": {"X": IRIS_LIKE["X"][:4]}}
    submissions = [(alice, body), (bob, body), (alice, body), (bob, body)]
    with ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(lambda s: _submit(api, s[0], "/jobs/fit-predict", s[1]), submissions))
    finished = [wait_for_job(api, h, j["id"]) for (h, _), j in zip(submissions, jobs, strict=True)]
    assert all(j["status"] == "succeeded" for j in finished), finished

    # Each sees only their own jobs and models; the other's are absent, not forbidden.
    alice_ids = {j["id"] for j in api.get("/jobs", headers=alice).json()["jobs"]}
    bob_ids = {j["id"] for j in api.get("/jobs", headers=bob).json()["jobs"]}
    assert alice_ids == {jobs[0]["id"], jobs[2]["id"]}
    assert bob_ids == {jobs[1]["id"], jobs[3]["id"]}
    assert api.get(f"/jobs/{jobs[1]['id']}", headers=alice).status_code == 404
    assert api.get(f"/jobs/{jobs[1]['id']}/result", headers=alice).status_code == 404
    bob_model = finished[1]["model_id"]
    assert api.get(f"/models/{bob_model}", headers=alice).status_code == 404
    foreign = api.post(
        "/jobs/predict", headers=alice, json={"model_id": bob_model, "X": [[1, 2, 3]]}
    )
    assert (foreign.status_code, foreign.json()["code"]) == (404, "model_not_found")

    # The emulator saw every call of these jobs, uploads included, under its owner's token.
    calls = httpx.get(f"{stack.emulator_url}/_emulator/calls").json()[calls_before:]
    by_account: dict[str | None, list[dict]] = {}
    for call in calls:
        by_account.setdefault(call["account"], []).append(call)
    alice_account, bob_account = account_name(alice_token), account_name(bob_token)
    for account in (alice_account, bob_account):
        paths = [c["path"] for c in by_account[account]]
        assert paths.count("/tabpfn/fit") == 2, paths
        assert paths.count("/tabpfn/predict") == 2, paths
    uploads = [c for c in calls if c["method"] == "PUT"]
    assert uploads, "the client uploaded nothing?"
    for upload in uploads:
        assert upload["account"] in (alice_account, bob_account)
        assert upload["auth_account"] in (None, upload["account"])
    authenticated = [c for c in calls if c["path"].startswith("/tabpfn/") and c["method"] == "POST"]
    assert all(c["account"] in (alice_account, bob_account) for c in authenticated)


def test_deleting_a_model_removes_it_here_and_upstream(api, stack):
    headers = register(api, "alice-token")
    _, fit = _run(api, headers, "/jobs/fit", {"task": "classification", "train": IRIS_LIKE})
    model_id = fit["model_id"]
    assert api.delete(f"/models/{model_id}", headers=register(api)).status_code == 404

    deleted = api.delete(f"/models/{model_id}", headers=headers)
    assert deleted.status_code == 204
    assert deleted.headers["Upstream-Deleted"] == "true"
    assert api.get(f"/models/{model_id}", headers=headers).status_code == 404
    refused = api.post("/jobs/predict", headers=headers, json={"model_id": model_id, "X": [[1]]})
    assert (refused.status_code, refused.json()["code"]) == (404, "model_not_found")
    calls = httpx.get(f"{stack.emulator_url}/_emulator/calls").json()
    assert [
        c["status"]
        for c in calls
        if c["path"] == "/delete_dataset/" and c["account"] == account_name("alice-token")
    ][-1] == 200
    # The fit job and its result stay.
    assert api.get(f"/jobs/{fit_job_id(api, headers)}", headers=headers).status_code == 200


def fit_job_id(api, headers) -> str:
    return api.get("/jobs", headers=headers).json()["jobs"][0]["id"]
