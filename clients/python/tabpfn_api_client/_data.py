"""Turning DataFrames, arrays and lists into the JSON the service takes.

Cells become JSON numbers, strings, booleans or null (NaN, None, pd.NA, NaT);
column names travel next to the rows so the service matches them by name.

Imported by the first call that sends a table, not with the package: numpy and
pandas take about 0.3 s to import, which `import tabpfn_api_client` and the
CLI's commands that send or show no table (`setup`, `jobs`, `models`, `usage`,
`cancel`) no longer pay.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import ValidationError

Rows = list[list[Any]] | list[dict[str, Any]]


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, np.generic):
        return _cell(value.item())
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, dt.datetime | dt.date | dt.time | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.timedelta | pd.Timedelta):
        return pd.Timedelta(value).total_seconds()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _column(values: np.ndarray) -> list[Any]:
    """One column as JSON cells; numeric columns without per-cell Python work."""
    if values.dtype.kind == "f":
        cells = values.astype(np.float64).astype(object)
        cells[np.isnan(values)] = None
        return cells.tolist()
    if values.dtype.kind in "iub":
        return values.tolist()
    return [_cell(v) for v in values.tolist()]


# Units of the ISO text the service writes datetimes in (shared/tables/payloads.py).
_ISO_UNITS = ["D", "s", "ms", "us", "ns"]


def _iso_datetimes(values: np.ndarray, *, zoned: bool = False) -> list[Any]:
    """datetime64 values as the service writes a Parquet or CSV file's at rest: ISO
    8601 in the coarsest unit that keeps every value exact (the date alone when every
    time is midnight), UTC with a Z when the column had a zone.

    The same table must be the same text whichever way it is sent: isoformat() wrote
    "2024-01-04T00:00:00" where an upload of the same frame stores "2024-01-04", so a
    model fitted from a DataFrame met the dates of an uploaded test file as
    categories it never saw (and a 2-D datetime64[ns] array went as nanoseconds).
    """
    missing = np.isnat(values)
    present = values[~missing]
    units = _ISO_UNITS[1:] if zoned else _ISO_UNITS
    unit = next(
        (u for u in units if (present.astype(f"datetime64[{u}]") == present).all()), units[-1]
    )
    text = np.datetime_as_string(values, unit=unit).astype(object)
    if zoned:
        text = text + "Z"
    text[missing] = None
    return text.tolist()


def _timedeltas(values: np.ndarray) -> list[Any]:
    """timedelta64 values as seconds, as a DataFrame's are sent (NaT as null)."""
    seconds = values.astype("timedelta64[ns]").astype(np.int64) / 1e9
    missing = np.isnat(values)
    return [None if gap else float(v) for v, gap in zip(seconds, missing, strict=True)]


def _frame_rows(frame: pd.DataFrame) -> list[list[Any]]:
    columns = []
    for i in range(frame.shape[1]):
        series = frame.iloc[:, i]
        if series.dtype.kind == "M":
            zoned = getattr(series.dt, "tz", None) is not None
            if zoned:
                series = series.dt.tz_convert("UTC").dt.tz_localize(None)
            columns.append(_iso_datetimes(series.to_numpy(), zoned=zoned))
            continue
        if isinstance(series.dtype, pd.CategoricalDtype) or series.dtype.kind == "m":
            series = series.astype(object)
        try:
            values = series.to_numpy(dtype=None, na_value=np.nan)
        except (TypeError, ValueError):
            values = series.astype(object).to_numpy()
        columns.append(_column(values))
    return [list(row) for row in zip(*columns, strict=True)] if columns else []


def to_rows(X: Any, columns: Sequence[str] | None = None) -> tuple[Rows, list[str] | None]:
    """Rows (or records) and column names for `X`.

    `X` may be a pandas DataFrame (its column names are kept), a 2-D numpy array,
    a list of rows, or a list of records (dicts, which name their own columns).
    """
    if isinstance(X, pd.Series):
        raise ValidationError("X must be 2-D: use a DataFrame (X.to_frame()) or a list of rows.")
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns] if columns is None else list(columns)
        return _frame_rows(X), names
    if isinstance(X, np.ndarray):
        if X.ndim != 2:
            raise ValidationError(f"X must be 2-D; got an array of shape {X.shape}.")
        if X.dtype.kind == "M":
            cells = [_iso_datetimes(X[:, j]) for j in range(X.shape[1])]
        elif X.dtype.kind == "m":
            cells = [_timedeltas(X[:, j]) for j in range(X.shape[1])]
        else:
            cells = [_column(X[:, j]) for j in range(X.shape[1])]
        rows = [list(r) for r in zip(*cells, strict=True)]
        return rows, (list(columns) if columns is not None else None)
    if hasattr(X, "__array__") and not isinstance(X, list | tuple):
        return to_rows(np.asarray(X), columns)
    rows = list(X)
    if not rows:
        raise ValidationError("X has no rows.")
    if isinstance(rows[0], Mapping):
        if columns is not None:
            raise ValidationError("columns are only for rows; records name their own columns.")
        return [{str(k): _cell(v) for k, v in dict(r).items()} for r in rows], None
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, str | bytes) or not isinstance(row, Sequence | np.ndarray):
            raise ValidationError(f"X[{i}] is not a row; X must be 2-D (a list of rows).")
        out.append([_cell(v) for v in row])
    return out, (list(columns) if columns is not None else None)


def to_labels(y: Any) -> list[Any]:
    """A target as a JSON list (labels or numbers)."""
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise ValidationError("y must be one column.")
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series):
        y = y.to_numpy()
    values = np.asarray(y, dtype=object if not isinstance(y, np.ndarray) else None)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValidationError(f"y must be 1-D; got shape {values.shape}.")
    return _column(values)
