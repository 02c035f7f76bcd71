"""The payload codec: JSON tables in, validated DataFrames, compressed Parquet at rest.

Every check that can reject user data runs here, before anything is stored,
so bad input never leaves half a job behind.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from shared.errors import ValidationFailed
from shared.job_states import CLASSIFICATION

# The train set's target travels as the last Parquet column under this name.
TARGET_COLUMN = "__tabpfn_api_target__"

_SCALARS = (str, int, float, bool)


def _check_cell(value: Any, where: str) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise ValidationFailed(f"{where} is infinite; send null for a missing value.")
        return value
    raise ValidationFailed(
        f"{where} is a {type(value).__name__}; cells must be numbers, strings, booleans or null."
    )


def _rows_from_records(records: Sequence[Any]) -> tuple[list[str], list[list[Any]]]:
    columns: dict[str, None] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValidationFailed(f"X[{i}] is not an object; use all rows or all records.")
        columns.update(dict.fromkeys(record))
    names = list(columns)
    return names, [[record.get(name) for name in names] for record in records]


def table_from_json(X: Sequence[Any], columns: Sequence[str] | None, *, name: str) -> pd.DataFrame:
    """Build a feature table from rows (lists) or records (objects).

    Columns that hold any text become text columns (numbers in them become
    text too); the rest are numeric. Missing values are null.
    """
    if not X:
        raise ValidationFailed(f"{name}.X has no rows.")
    if isinstance(X[0], dict):
        if columns is not None:
            raise ValidationFailed(f"{name}.columns is only for rows; records name their columns.")
        names, rows = _rows_from_records(X)
    else:
        rows = []
        width = len(X[0]) if isinstance(X[0], list) else 0
        for i, row in enumerate(X):
            if not isinstance(row, list):
                raise ValidationFailed(f"{name}.X[{i}] is not a list; use all rows or all records.")
            if len(row) != width:
                raise ValidationFailed(
                    f"{name}.X[{i}] has {len(row)} values but the first row has {width}."
                )
            rows.append(row)
        if width == 0:
            raise ValidationFailed(f"{name}.X rows have no values.")
        if columns is None:
            names = [f"x{j}" for j in range(width)]
        elif len(columns) != width:
            raise ValidationFailed(
                f"{name}.columns names {len(columns)} columns but the rows have {width} values."
            )
        else:
            names = list(columns)
    if len(set(names)) != len(names):
        raise ValidationFailed(f"{name}: column names must be unique.")
    if TARGET_COLUMN in names:
        raise ValidationFailed(f"{name}: the column name {TARGET_COLUMN!r} is reserved.")

    data: dict[str, pd.Series] = {}
    for j, column in enumerate(names):
        values = [_check_cell(row[j], f"{name}.X[{i}][{column!r}]") for i, row in enumerate(rows)]
        if any(isinstance(v, str) for v in values):
            data[column] = pd.Series(
                [None if v is None else str(v) for v in values], dtype="object"
            )
        else:
            data[column] = pd.Series(
                [math.nan if v is None else float(v) for v in values], dtype="float64"
            )
    return pd.DataFrame(data)


def labels_from_json(y: Sequence[Any], *, task: str, n_rows: int) -> pd.Series:
    """Validate a target: classes for classification, finite numbers for regression."""
    if len(y) != n_rows:
        raise ValidationFailed(f"train.y has {len(y)} values but train.X has {n_rows} rows.")
    for i, value in enumerate(y):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise ValidationFailed(f"train.y[{i}] is null; every row needs a target.")
        if not isinstance(value, _SCALARS):
            raise ValidationFailed(f"train.y[{i}] must be a number or a string.")
    if task == CLASSIFICATION:
        kinds = {"text" if isinstance(v, str) else "number" for v in y}
        if len(kinds) > 1:
            raise ValidationFailed("train.y mixes text and numbers; use one type of label.")
        labels = pd.Series(list(y))
        if labels.nunique() < 2:
            raise ValidationFailed("train.y has a single class; classification needs two or more.")
        return labels
    for i, value in enumerate(y):
        if isinstance(value, str | bool) or math.isinf(value):
            raise ValidationFailed(f"train.y[{i}] must be a finite number for regression.")
    return pd.Series([float(v) for v in y], dtype="float64")


def align_columns(table: pd.DataFrame, model_columns: list[str], *, named: bool) -> pd.DataFrame:
    """Match predict data to the model's columns, by name when the caller named them."""
    if not named:
        if table.shape[1] != len(model_columns):
            raise ValidationFailed(
                f"X has {table.shape[1]} columns but the model was fitted on {len(model_columns)}."
            )
        table.columns = model_columns
        return table
    missing = [c for c in model_columns if c not in table.columns]
    extra = [c for c in table.columns if c not in model_columns]
    if missing or extra:
        raise ValidationFailed(
            "X's columns do not match the model's: "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}."
        )
    return table[model_columns]


def encode_table(table: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()


def decode_table(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


def split_train(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    return table.drop(columns=[TARGET_COLUMN]), table[TARGET_COLUMN]
