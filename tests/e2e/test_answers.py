"""The service's answers against tabpfn-client's own on the same data.

Each case runs the real tabpfn-client (in a subprocess: it reads its server URL
when imported) against the stack's emulator, and the same data through the
service; the emulator's forest is deterministic, so the two must agree.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.support.api import register, wait_for_job

# A code column: numbers and a word, so the fit reads it as text (categories).
TRAIN_CODES = [101, 202, 303, "A7"] * 10
TRAIN_LABELS = {"101": "x", "202": "y", "303": "z", "A7": "x"}
# The test set's codes are numbers alone: still the categories "101", "202", "303".
TEST_CODES = [101, 202, 303, 202, 101, 303]


def _noise(n: int) -> list[float]:
    return [round(0.001 * (i % 7), 3) for i in range(n)]


def _train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "code": pd.Series(TRAIN_CODES, dtype=object),
            "noise": _noise(len(TRAIN_CODES)),
            "label": [TRAIN_LABELS[str(c)] for c in TRAIN_CODES],
        }
    )


def _test() -> pd.DataFrame:
    return pd.DataFrame({"code": TEST_CODES, "noise": _noise(len(TEST_CODES))})


DIRECT_SCRIPT = """
import json, sys
import numpy as np, pandas as pd
from tabpfn_client import TabPFNClassifier

data = json.loads(sys.stdin.read())
X = pd.DataFrame(data["X"], columns=data["columns"])
X_test = pd.DataFrame(data["X_test"], columns=data["columns"])
clf = TabPFNClassifier().fit(X, np.asarray(data["y"]))
print("RESULT:" + json.dumps({
    "probabilities": clf.predict_proba(X_test).tolist(),
    "classes": clf.classes_.tolist(),
}))
"""


def _direct(stack, tmp_path: Path, X: pd.DataFrame, y: list, X_test: pd.DataFrame) -> dict:
    """tabpfn-client's answer, through its estimator, against the stack's emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TABPFN_", "EMULATOR_"))}
    env.update(HOME=str(tmp_path), TABPFN_CLIENT_API_URL=stack.emulator_url)
    env["TABPFN_TOKEN"] = "demo-token"
    data = {
        "X": X.to_numpy().tolist(),
        "X_test": X_test.to_numpy().tolist(),
        "columns": list(X.columns),
        "y": y,
    }
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DIRECT_SCRIPT)],
        input=json.dumps(data),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("RESULT:")]
    return json.loads(line.removeprefix("RESULT:"))


def _result(api, headers: dict, response) -> dict:
    assert response.status_code == 202, response.text
    job = wait_for_job(api, headers, response.json()["id"])
    assert job["status"] == "succeeded", job
    return api.get(f"/jobs/{job['id']}/result", headers=headers).json()


def _rows(frame: pd.DataFrame) -> list[list]:
    """Rows of plain JSON cells, each column in its own type (to_numpy() makes the
    integer codes beside floats floats)."""
    return [list(row) for row in zip(*(frame[c].tolist() for c in frame.columns), strict=True)]


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _as_text_codes(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(code=frame["code"].astype(str))


@pytest.fixture(scope="module")
def direct_answer(stack, tmp_path_factory) -> dict:
    """The codes as the text they are, straight to tabpfn-client."""
    train = _as_text_codes(_train())
    return _direct(
        stack,
        tmp_path_factory.mktemp("direct"),
        train[["code", "noise"]],
        train["label"].tolist(),
        _as_text_codes(_test()),
    )


def _same_answer(result: dict, direct: dict) -> None:
    assert result["classes"] == direct["classes"]
    np.testing.assert_allclose(result["probabilities"], direct["probabilities"])
    best = np.asarray(direct["probabilities"]).argmax(axis=1)
    assert result["predictions"] == [direct["classes"][i] for i in best]


FIT_ROUTES = ["json", "csv", "parquet"]
PREDICT_ROUTES = ["json rows", "json records", "csv", "parquet"]


@pytest.fixture(scope="module")
def models(stack) -> dict:
    """One model per way of sending the train set, all of the same data."""
    with httpx.Client(base_url=f"{stack.api_url}/api/v1", timeout=60) as api:
        headers = register(api)
        train = _train()
        features = train[["code", "noise"]]
        bodies = {
            "json": {
                "json": {
                    "task": "classification",
                    "train": {
                        "X": _rows(features),
                        "columns": ["code", "noise"],
                        "y": train["label"].tolist(),
                    },
                }
            },
            "csv": {
                "data": {"task": "classification", "target": "label"},
                "files": {"file": ("train.csv", train.to_csv(index=False).encode())},
            },
            "parquet": {
                "data": {"task": "classification", "target": "label"},
                "files": {"file": ("train.parquet", _parquet(_as_text_codes(train)))},
            },
        }
        return {
            route: _result(api, headers, api.post("/jobs/fit", headers=headers, **body))["model_id"]
            for route, body in bodies.items()
        } | {"headers": headers}


def _predict_request(route: str, model_id: str) -> dict:
    test = _test()
    fields = {"model_id": model_id, "output": "probabilities"}
    if route == "json rows":
        return {"json": {**fields, "X": _rows(test), "columns": list(test.columns)}}
    if route == "json records":
        return {"json": {**fields, "X": test.to_dict("records")}}
    if route == "csv":
        return {"data": fields, "files": {"file": ("test.csv", test.to_csv(index=False).encode())}}
    return {"data": fields, "files": {"file": ("test.parquet", _parquet(test))}}


@pytest.mark.parametrize("predict_route", PREDICT_ROUTES)
@pytest.mark.parametrize("fit_route", FIT_ROUTES)
def test_numbers_in_a_column_fitted_as_text_are_its_categories(
    api, models, direct_answer, fit_route, predict_route
):
    """A test column of numbers alone (101, 202) for a column the model was fitted on
    as text ("101", "A7") is sent as text: 101 is the category "101", as tabpfn-client
    sends it, not the number 101.0 that the fit never saw (every row was predicted as
    an unseen category, with no error)."""
    headers = models["headers"]
    request = _predict_request(predict_route, models[fit_route])
    result = _result(api, headers, api.post("/jobs/predict", headers=headers, **request))
    _same_answer(result, direct_answer)


def test_fit_predict_json_with_numeric_test_codes(api, direct_answer):
    headers = register(api)
    train, test = _train(), _test()
    body = {
        "task": "classification",
        "train": {
            "X": _rows(train[["code", "noise"]]),
            "columns": ["code", "noise"],
            "y": train["label"].tolist(),
        },
        "test": {"X": _rows(test)},
        "output": "probabilities",
    }
    result = _result(api, headers, api.post("/jobs/fit-predict", headers=headers, json=body))
    _same_answer(result, direct_answer)


def test_fit_predict_csv_with_numeric_test_codes(api, direct_answer):
    headers = register(api)
    train, test = _train(), _test()
    files = {
        "train_file": ("train.csv", train.to_csv(index=False).encode()),
        "test_file": ("test.csv", test.to_csv(index=False).encode()),
    }
    data = {"task": "classification", "target": "label", "output": "probabilities"}
    result = _result(
        api, headers, api.post("/jobs/fit-predict", headers=headers, data=data, files=files)
    )
    _same_answer(result, direct_answer)


def test_a_test_set_split_in_chunks_is_cleaned_as_one_table(api, emulator_knobs):
    """tabpfn-client's text cleaning (spaces trimmed, commas dropped) looks at a whole
    column: a column whose cells all parse as numbers is left as it is. The worker
    cleaned each chunk on its own, so a chunk whose cells of a text column were
    " 5" and "7 " alone kept the spaces, categories the fit never saw ("5", "7"):
    those rows got other answers than in a whole table."""
    headers = register(api)
    codes = ["5", "7", "x y"] * 10
    labels = {"5": "five", "7": "seven", "x y": "xy"}
    fit = {
        "task": "classification",
        "train": {"X": [[c, 0.0] for c in codes], "columns": ["t", "z"]},
    }
    fit["train"]["y"] = [labels[c] for c in codes]
    model_id = _result(api, headers, api.post("/jobs/fit", headers=headers, json=fit))["model_id"]
    test = [" 5", "7 ", " 5", "7 ", "x y", "x  y", " 5", "x, y"]
    body = {"model_id": model_id, "X": [[t, 0.0] for t in test], "columns": ["t", "z"]}
    whole = _result(api, headers, api.post("/jobs/predict", headers=headers, json=body))
    assert whole["predictions"] == ["five", "seven", "five", "seven", "xy", "xy", "five", "xy"]

    emulator_knobs(max_rows=4)  # two chunks; the first holds number-like text alone
    chunked = _result(api, headers, api.post("/jobs/predict", headers=headers, json=body))
    assert chunked["predictions"] == whole["predictions"]


def test_a_parquet_nan_in_a_column_fitted_as_text_is_missing(api, stack, models):
    """A float NaN in a column the model knows as text is a missing value, as a null
    is: stored as null, not as the text "nan" (Arrow's cast of NaN to text), which
    would be a category of its own to an upstream that tells the two apart."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "code": pa.array([101.0, float("nan"), 202.0, None]),
            "noise": pa.array([0.0, 0.0, 0.0, 0.0]),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    headers = models["headers"]
    response = api.post(
        "/jobs/predict",
        headers=headers,
        data={"model_id": models["json"]},
        files={"file": ("test.parquet", buffer.getvalue())},
    )
    _result(api, headers, response)
    [(stored,)] = stack.sql(
        "SELECT test_parquet FROM job_data WHERE job_id = :id", id=response.json()["id"]
    )
    assert pd.read_parquet(io.BytesIO(stored))["code"].tolist() == ["101", None, "202", None]
