"""Error paths through the real stack: every one answers a stable code and stores nothing."""

from __future__ import annotations

import uuid

import httpx
import pytest

from cli.ports import free_port
from tests.support.api import register, wait_for_job

GOOD_TRAIN = {"X": [[1.0, "a"], [2.0, "b"], [3.0, "a"], [4.0, "b"]], "y": ["x", "x", "y", "y"]}


def test_setup_with_a_bad_token_is_upstream_auth_failed(api):
    response = api.post("/auth/setup", json={"tabpfn_token": "not-a-real-token"})
    assert response.status_code == 401
    assert response.json()["code"] == "upstream_auth_failed"
    assert "not-a-real-token" not in response.text


def test_setup_with_the_upstream_down_is_503(stack, tmp_path):
    # An API whose upstream is a port nobody listens on.
    dead_upstream = f"http://127.0.0.1:{free_port()}"
    with stack.extra_api("api-no-upstream", tmp_path, TABPFN_API_URL=dead_upstream) as (url, _):
        response = httpx.post(f"{url}/auth/setup", json={"tabpfn_token": "demo-token"})
    assert response.status_code == 503
    assert response.json()["code"] == "upstream_unavailable"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer tpa_0000000000000000_nope"}, {"Authorization": "Bearer x"}],
    ids=["missing", "unknown-key", "malformed"],
)
def test_routes_need_a_valid_api_key(api, headers):
    for method, path in [("GET", "/jobs"), ("GET", "/models"), ("POST", "/jobs/fit")]:
        response = api.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (path, response.text)
        assert response.json()["code"] == "unauthorized"


def test_a_wrong_secret_with_a_real_key_id_is_refused(api):
    headers = register(api)
    key = headers["Authorization"].removeprefix("Bearer ")
    prefix, key_id, secret = key.split("_", 2)
    for forged in (f"{prefix}_{key_id}_{'A' * len(secret)}", f"{key}{'A' * 100}"):
        response = api.get("/jobs", headers={"Authorization": f"Bearer {forged}"})
        assert (response.status_code, response.json()["code"]) == (401, "unauthorized")


BAD_FITS = {
    "not-json": None,
    "wrong-content-type": "form",
    "unknown-task": {"task": "clustering", "train": GOOD_TRAIN},
    "missing-train": {"task": "classification"},
    "unknown-field": {"task": "classification", "train": GOOD_TRAIN, "colour": "blue"},
    "ragged-rows": {"task": "classification", "train": {"X": [[1, 2], [3]], "y": ["a", "b"]}},
    "length-mismatch": {"task": "classification", "train": {"X": [[1], [2]], "y": ["a"]}},
    "empty": {"task": "classification", "train": {"X": [], "y": []}},
    "object-cell": {"task": "classification", "train": {"X": [[{"a": 1}], [2]], "y": ["a", "b"]}},
    "list-cell": {"task": "classification", "train": {"X": [[[1, 2]], [2]], "y": ["a", "b"]}},
    # Python's JSON (and so the API) reads the non-standard token NaN (and Infinity:
    # see test_number_range.py).
    "nan-target": b'{"task": "regression", "train": {"X": [[1], [2]], "y": [1.0, NaN]}}',
    # PostgreSQL's JSON has no NaN; options nested past what Python's JSON writes.
    "nan-option": b'{"task": "classification", "train": {"X": [[1], [2]], "y": ["a", "b"]}, '
    b'"options": {"softmax_temperature": NaN}}',
    "deep-option": b'{"task": "classification", "train": {"X": [[1], [2]], "y": ["a", "b"]}, '
    b'"options": {"inference_config": {"a": ' + b"[" * 1000 + b"]" * 1000 + b"}}}",
    "object-target": {"task": "classification", "train": {"X": [[1], [2]], "y": [{}, "b"]}},
    "null-target": {"task": "classification", "train": {"X": [[1], [2]], "y": ["a", None]}},
    "single-class": {"task": "classification", "train": {"X": [[1], [2]], "y": ["a", "a"]}},
    "text-regression": {"task": "regression", "train": {"X": [[1], [2]], "y": ["a", "b"]}},
    "mixed-labels": {"task": "classification", "train": {"X": [[1], [2]], "y": ["a", 1]}},
    # Not classes: the upstream would fail the fit after the job queued.
    "fractional-labels": {"task": "classification", "train": {"X": [[1], [2]], "y": [0.5, 1.5]}},
    "bad-option": {"task": "classification", "train": GOOD_TRAIN, "options": {"n_estimators": "x"}},
    "unknown-option": {"task": "classification", "train": GOOD_TRAIN, "options": {"nope": 1}},
    # Every seeding path of the upstream refuses it, after the job has queued.
    "negative-seed": {
        "task": "classification",
        "train": GOOD_TRAIN,
        "options": {"random_state": -5},
    },
    # numpy's RandomState takes 0 to 2**32 - 1: the emulator failed the job after it queued.
    "seed-of-2**32": {
        "task": "classification",
        "train": GOOD_TRAIN,
        "options": {"random_state": 2**32},
    },
    "seed-of-2**70": {
        "task": "classification",
        "train": GOOD_TRAIN,
        "options": {"random_state": 2**70},
    },
    "callback-not-http": {"task": "classification", "train": GOOD_TRAIN, "callback_url": "ftp://x"},
    # NUL (U+0000): PostgreSQL's text and JSON cannot hold it. An option was a 503,
    # a label failed its job after the fit (storing the classes), a column name upstream.
    "nul-in-an-option": {
        "task": "classification",
        "train": GOOD_TRAIN,
        "options": {"model_path": "a\u0000b"},
    },
    "nul-in-a-label": {
        "task": "classification",
        "train": {"X": GOOD_TRAIN["X"], "y": ["x\u0000", "x\u0000", "y", "y"]},
    },
    "nul-in-a-column-name": {
        "task": "classification",
        "train": {**GOOD_TRAIN, "columns": ["size", "kind\u0000"]},
    },
    "columns-mismatch": {
        "task": "classification",
        "train": {"X": [[1, 2], [3, 4]], "y": ["a", "b"], "columns": ["only_one"]},
    },
}


@pytest.mark.parametrize("body", BAD_FITS.values(), ids=BAD_FITS.keys())
def test_malformed_fit_is_422_and_stores_nothing(api, body):
    headers = register(api)
    if body is None:
        response = api.post(
            "/jobs/fit",
            content=b"{not json",
            headers={**headers, "content-type": "application/json"},
        )
    elif isinstance(body, bytes):
        response = api.post(
            "/jobs/fit", content=body, headers={**headers, "content-type": "application/json"}
        )
    elif body == "form":
        response = api.post("/jobs/fit", data={"task": "classification"}, headers=headers)
    else:
        response = api.post("/jobs/fit", json=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "validation_error"
    assert error["detail"] and isinstance(error["detail"], str)
    assert api.get("/jobs", headers=headers).json()["jobs"] == []


def test_the_largest_seed_numpy_takes_is_accepted_and_the_job_succeeds(api):
    headers = register(api)
    body = {"task": "classification", "train": GOOD_TRAIN, "options": {"random_state": 2**32 - 1}}
    response = api.post("/jobs/fit", json=body, headers=headers)
    assert response.status_code == 202, response.text
    job = wait_for_job(api, headers, response.json()["id"])
    assert job["status"] == "succeeded", job


def test_a_seed_out_of_range_says_the_range(api):
    headers = register(api)
    body = {"task": "regression", "train": {"X": [[1], [2]], "y": [1.0, 2.0]}}
    response = api.post(
        "/jobs/fit", json={**body, "options": {"random_state": 2**32}}, headers=headers
    )
    assert (response.status_code, response.json()["code"]) == (422, "validation_error")
    assert response.json()["detail"] == (
        "options.random_state is 4294967296; a seed must be from 0 to 4294967295 (2**32 - 1)."
    )


UNREADABLE_JSON = {
    "nested-too-deep": (b"[" * 1100 + b"]" * 1100, "it nests arrays or objects too deeply"),
    "integer-of-5000-digits": (
        b'{"task": "regression", "train": {"X": [[' + b"9" * 5000 + b']], "y": [1]}}',
        "it holds an integer of more than 4300 digits",
    ),
    "latin-1": (
        '{"task": "classification", "train": {"X": [["é"], ["è"]], "y": ["a", "b"]}}'.encode(
            "latin-1"
        ),
        "it is not UTF-8 (byte 0xe9 at offset 45)",
    ),
}


@pytest.mark.parametrize("body", UNREADABLE_JSON.values(), ids=UNREADABLE_JSON.keys())
def test_json_the_parser_cannot_read_is_the_same_422_as_broken_json(api, body):
    """Not its syntax: json.loads gives up on another error, which FastAPI made a 400."""
    content, says = body
    headers = {**register(api), "content-type": "application/json; charset=latin-1"}
    response = api.post("/jobs/fit", content=content, headers=headers)
    assert (response.status_code, response.json()["code"]) == (422, "validation_error")
    assert response.json()["detail"] == f"The body is not JSON this service can read: {says}."


def test_a_body_too_deep_to_fingerprint_for_its_idempotency_key_is_422(api):
    # Hashed for the key before it is checked: nesting past pydantic's serializer was a 500.
    deep = b"[" * 300 + b"]" * 300
    body = b'{"task": "classification", "train": {"X": [[' + deep + b'], [1]], "y": ["a", "b"]}}'
    headers = {**register(api), "content-type": "application/json", "Idempotency-Key": "deep"}
    response = api.post("/jobs/fit", content=body, headers=headers)
    assert (response.status_code, response.json()["code"]) == (422, "validation_error")
    assert "too deeply" in response.json()["detail"]
    assert api.get("/jobs", headers=headers).json()["jobs"] == []


def test_predict_checks_the_model_and_its_columns(api):
    headers = register(api)
    train = {"X": GOOD_TRAIN["X"], "y": GOOD_TRAIN["y"], "columns": ["size", "kind"]}
    fit = api.post("/jobs/fit", json={"task": "classification", "train": train}, headers=headers)
    job = wait_for_job(api, headers, fit.json()["id"])
    assert job["status"] == "succeeded", job

    unknown = api.post(
        "/jobs/predict", json={"model_id": str(uuid.uuid4()), "X": [[1, "a"]]}, headers=headers
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "model_not_found")

    wrong_names = api.post(
        "/jobs/predict",
        json={"model_id": job["model_id"], "X": [[1, "a"]], "columns": ["size", "colour"]},
        headers=headers,
    )
    assert wrong_names.status_code == 422
    assert "colour" in wrong_names.json()["detail"]
    wrong_width = api.post(
        "/jobs/predict", json={"model_id": job["model_id"], "X": [[1]]}, headers=headers
    )
    assert wrong_width.status_code == 422
    wrong_output = api.post(
        "/jobs/predict",
        json={"model_id": job["model_id"], "X": [[1, "a"]], "output": "mean"},
        headers=headers,
    )
    assert wrong_output.status_code == 422
    # Only the fit job exists: the refused predicts left nothing behind.
    assert len(api.get("/jobs", headers=headers).json()["jobs"]) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/auth/keys/%00"), ("GET", "/jobs?status=%00")],
)
def test_a_nul_in_a_path_or_query_is_422(api, method, path):
    # It reached PostgreSQL, whose text cannot hold it: the driver refused it (a 500).
    response = api.request(method, path, headers=register(api))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert "NUL" in response.json()["detail"]


def test_job_list_filters_take_only_the_job_vocabulary(api):
    # Any text was a filter: a misspelt one answered an empty page, as if no job matched.
    headers = register(api)
    for query, valid in (
        ("status=bogus", "'queued', 'running', 'succeeded', 'failed' or 'canceled'"),
        ("type=fit-predict", "'fit', 'predict' or 'fit_predict'"),  # the CLI's command name
    ):
        response = api.get(f"/jobs?{query}", headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"
        assert valid in response.json()["detail"], response.json()
    assert api.get("/jobs?status=queued&type=fit_predict", headers=headers).status_code == 200


def test_ids_that_are_not_uuids_or_not_yours(api):
    headers = register(api)
    assert api.get("/jobs/not-a-uuid", headers=headers).json()["code"] == "validation_error"
    missing = api.get(f"/jobs/{uuid.uuid4()}", headers=headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
