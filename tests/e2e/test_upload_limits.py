"""Input refused at the door, through the real stack: numbers TabPFN cannot take
(the same code in every format), bad rows found late in a streamed upload, and
tables that decode past a limit, checked before they are decoded."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.api import register
from tests.support.stacks import extra_api_url


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _refused(response: httpx.Response, code: str, *says: str) -> dict:
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == code, error
    for words in says:
        assert words in error["detail"], error
    return error


def _nothing_stored(api: httpx.Client, headers: dict) -> None:
    assert api.get("/jobs", headers=headers).json()["jobs"] == []


def _fit_file(api, headers, task: str, filename: str, content: bytes) -> httpx.Response:
    return api.post(
        "/jobs/fit",
        headers=headers,
        data={"task": task, "target": "y"},
        files={"file": (filename, content)},
    )


OUT_OF_RANGE = "out of range"
FLOAT32 = "the float32 range TabPFN computes in"


def test_1e400_in_a_csv_cell_is_refused_not_read_as_text(api):
    headers = register(api)
    content = b"a,b,y\n1.5,x,p\n1e400,y,q\n2.5,z,p\n"
    error = _refused(
        _fit_file(api, headers, "classification", "t.csv", content),
        "number_out_of_range",
        "column 'a', row 1",
        OUT_OF_RANGE,
        FLOAT32,
    )
    assert error["row"] == 1
    # The same cell in a column that is text anyway stays text: it is a word there.
    text = b"a,b,y\n1.5,x,p\n1e400,y,q\nred,z,p\n"
    accepted = _fit_file(api, headers, "classification", "t.csv", text)
    assert accepted.status_code == 202, accepted.text


REGRESSION_1E308 = {
    "json-rows": {"X": [[1.0], [2.0], [3.0]], "y": [1.0, 1e308, 2.0]},
    "json-columns": {"X": {"a": [1.0, 2.0, 3.0]}, "y": [1.0, 1e308, 2.0]},
    "json-records": {"X": [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}], "y": [1.0, 1e308, 2.0]},
    "json-feature": {"X": [[1.0], [1e308], [3.0]], "y": [1.0, 2.0, 3.0]},
}


@pytest.mark.parametrize("train", REGRESSION_1E308.values(), ids=REGRESSION_1E308.keys())
def test_a_number_past_float32_is_refused_at_submit_as_json(api, train):
    headers = register(api)
    response = api.post("/jobs/fit", headers=headers, json={"task": "regression", "train": train})
    _refused(response, "number_out_of_range", "row 1", OUT_OF_RANGE, FLOAT32)
    _nothing_stored(api, headers)


def test_infinity_and_1e400_in_json_are_the_same_refusal(api):
    headers = register(api)
    # And an integer of 400 digits, which JSON allows and no float holds.
    for literal in (b"Infinity", b"1e400", b"-1e400", b"9" * 400, b"-" + b"9" * 400):
        body = b'{"task": "regression", "train": {"X": [[1], [%s]], "y": [1, 2]}}' % literal
        response = api.post(
            "/jobs/fit", content=body, headers={**headers, "content-type": "application/json"}
        )
        _refused(response, "number_out_of_range", "column 'x0', row 1", FLOAT32)
    _nothing_stored(api, headers)


FILES_1E308 = {
    "csv-target": ("t.csv", b"a,y\n1,1.5\n2,1e308\n3,2\n", "column 'y', row 1"),
    "csv-feature": ("t.csv", b"a,y\n1,1.5\n-1e308,2\n3,2\n", "column 'a', row 1"),
    "parquet-target": (
        "t.parquet",
        _parquet(pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [1.5, 1e308, 2.0]})),
        "column 'y', row 1",
    ),
    "parquet-feature": (
        "t.parquet",
        _parquet(pd.DataFrame({"a": [1.0, np.inf, 3.0], "y": [1.5, 1.0, 2.0]})),
        "column 'a', row 1",
    ),
}


@pytest.mark.parametrize("upload", FILES_1E308.values(), ids=FILES_1E308.keys())
def test_a_number_past_float32_is_refused_at_submit_in_files(api, upload):
    filename, content, where = upload
    headers = register(api)
    response = _fit_file(api, headers, "regression", filename, content)
    _refused(response, "number_out_of_range", where, OUT_OF_RANGE, FLOAT32)
    _nothing_stored(api, headers)


def _long_csv(rows: int) -> list[bytes]:
    frame = pd.DataFrame({"a": np.arange(rows) * 0.5, "b": np.where(np.arange(rows) % 2, "u", "v")})
    return frame.to_csv(index=False).encode().split(b"\n")


REGRESSION_TRAIN = ("regression", "y", b"a,b,y\n1,u,1.5\n2,v,2.5\n3,u,0.5\n")
CLASSIFICATION_TRAIN = ("classification", "t", b"x,y,t\n1,2,a\n2,3,b\n3,4,a\n")


def _fit_predict(
    api, headers, test: bytes, *, name: str = "test.csv", train=REGRESSION_TRAIN
) -> httpx.Response:
    """A fit-predict of a tiny train file (task, target, CSV) and this test file."""
    task, target, train_csv = train
    return api.post(
        "/jobs/fit-predict",
        headers=headers,
        data={"task": task, "target": target},
        files={"train_file": ("train.csv", train_csv), "test_file": (name, test)},
    )


def test_bad_input_late_in_a_stream_names_its_row_and_stores_nothing(api):
    """A test set (no upstream row limit) of 300,000 rows, about 5 MiB: the bad row
    comes many batches after the first."""
    headers = register(api)
    rows = 300_000
    late = rows - 10
    lines = _long_csv(rows)
    lines[late + 1] = b"1e308,v"  # +1: the header line
    error = _refused(
        _fit_predict(api, headers, b"\n".join(lines)),
        "number_out_of_range",
        f"test_file: column 'a', row {late}",
    )
    assert error["row"] == late

    lines[late + 1] = b"1.0,v,extra"
    error = _refused(
        _fit_predict(api, headers, b"\n".join(lines)),
        "validation_error",
        f"test_file: line {late + 2} has 3 fields",
        "header has 2",
    )
    assert error["line"] == late + 2

    # A missing target near the end of the largest train set the upstream takes.
    train = _long_csv(10_000)
    train = [train[0] + b",y"] + [line + b",1.5" for line in train[1:-1]]
    train[9_990 + 1] = train[9_990 + 1][: -len(b"1.5")]
    response = _fit_file(api, headers, "regression", "t.csv", b"\n".join(train))
    _refused(response, "validation_error", "file column 'y', row 9990 is empty")
    _nothing_stored(api, headers)


def _bomb(rows: int = 30_000_000) -> bytes:
    """A small zstd Parquet file of millions of zeros in one row group (a decompression bomb)."""
    zeros = pa.table({"x": pa.array(np.zeros(rows)), "y": pa.array(np.zeros(rows))})
    buffer = io.BytesIO()
    pq.write_table(zeros, buffer, compression="zstd", row_group_size=rows)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    content = _bomb()
    assert len(content) < 2**20
    return content


def test_a_parquet_bomb_is_refused_from_its_metadata(api, bomb):
    headers = register(api)
    started = time.perf_counter()
    response = _fit_file(api, headers, "classification", "bomb.parquet", bomb)
    elapsed = time.perf_counter() - started
    error = _refused(response, "limit_exceeded", "30000000", "train_set_max_rows")
    assert error["limit"] == "train_set_max_rows"
    # Decoding 30 million rows takes seconds; the metadata, a few milliseconds
    # (the rest is the request itself on a shared machine).
    assert elapsed < 2.0, elapsed
    _nothing_stored(api, headers)


@pytest.fixture(scope="module")
def small_budget_api(stack, tmp_path_factory):
    yield from extra_api_url(stack, tmp_path_factory, "budget", MAX_DECODED_BYTES="50000000")


def test_a_test_set_past_the_decoded_budget_is_refused(api, small_budget_api, bomb):
    """Test sets have no upstream row limit: the byte budget is what stops a bomb there."""
    headers = register(api)
    with httpx.Client(base_url=small_budget_api, timeout=60) as client:
        response = _fit_predict(
            client, headers, bomb, name="bomb.parquet", train=CLASSIFICATION_TRAIN
        )
        error = _refused(response, "limit_exceeded", "max_decoded_bytes", "480000000")
        assert error["limit"] == "max_decoded_bytes"

        # A CSV is counted as it is read, and stopped at the budget.
        rows = 2_000_000
        csv = b"x,y\n" + b"1,2\n" * rows  # 2 million rows × 2 × 8 bytes: 32 MB decoded...
        under = _fit_predict(client, headers, csv, train=CLASSIFICATION_TRAIN)
        assert under.status_code == 202, under.text
        # ...twice that: over 50 MB
        over = _fit_predict(client, headers, csv + b"1,2\n" * rows, train=CLASSIFICATION_TRAIN)
        _refused(over, "limit_exceeded", "at least", "max_decoded_bytes")
    api.post(f"/jobs/{under.json()['id']}/cancel", headers=headers)
    assert len(api.get("/jobs", headers=headers).json()["jobs"]) == 1


def test_upload_limits_are_named_like_json_ones(api):
    """Classes counted across batches, columns from the header: the same limit names as JSON."""
    headers = register(api)
    classes = b"x,y\n" + b"".join(b"%d,c%d\n" % (i, i % 11) for i in range(9_000))
    too_wide = (",".join(f"f{j}" for j in range(501)) + ",y\n").encode() + b"0," * 501 + b"a\n"
    for content, limit in [(classes, "max_classes"), (too_wide, "max_cols")]:
        response = _fit_file(api, headers, "classification", "t.csv", content)
        error = _refused(response, "limit_exceeded", limit)
        assert error["limit"] == limit
    _nothing_stored(api, headers)


def test_a_wide_parquet_file_is_stored_whole_when_read_by_column_groups(api, stack):
    """Over 16 columns, a Parquet file is read 16 columns at a time and put back
    together; row groups that do not match the batches must not shift a row."""
    headers = register(api)
    rng = np.random.default_rng(3)
    rows = 9_000
    frame = pd.DataFrame({f"f{j}": rng.normal(size=rows) for j in range(40)})
    frame.loc[::7, "f5"] = np.nan
    frame["kind"] = pd.Categorical(rng.choice(["red", "green", "blue"], rows))
    frame["note"] = rng.choice(["a", "bb", None], rows)
    frame["y"] = rng.choice(["p", "q"], rows)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, row_group_size=1_234)
    response = _fit_file(api, headers, "classification", "wide.parquet", buffer.getvalue())
    assert response.status_code == 202, response.text
    [(stored,)] = stack.sql(
        "SELECT train_parquet FROM job_data WHERE job_id = :id", id=response.json()["id"]
    )
    table = pd.read_parquet(io.BytesIO(stored))
    expected = frame.drop(columns="y").assign(kind=frame["kind"].astype(object))
    pd.testing.assert_frame_equal(table.drop(columns=table.columns[-1]), expected)
    assert table.iloc[:, -1].tolist() == frame["y"].tolist()
    api.post(f"/jobs/{response.json()['id']}/cancel", headers=headers)
