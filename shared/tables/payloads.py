"""The payload codec: tables in (JSON or files), validated DataFrames, compressed Parquet at rest.

Every check that can reject user data runs here, before anything is stored,
so bad input never leaves half a job behind. JSON and uploaded files share
one definition of valid data: both become a DataFrame that `table_from_frame`
checks column by column, with vectorized operations rather than a loop per cell.

A valid feature table has unique column names and, per column, either text
(object dtype: str or None) or numbers (float64, NaN for missing). A column
with any text is text, its numbers written as text; booleans are numbers;
dates and times are ISO text.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api import types as ptypes

from shared.core.errors import ValidationFailed
from shared.jobs.states import CLASSIFICATION
from shared.tables.number_range import (
    check_numbers,
    first_out_of_range,
    out_of_range,
    past_float32,
)

# The train set's target travels as the last Parquet column under this name.
TARGET_COLUMN = "__tabpfn_api_target__"

_NUMBER_KINDS = {"integer", "floating", "mixed-integer-float", "decimal", "boolean"}
_DATE_KINDS = {"date", "datetime", "datetime64"}
_MIXED_KINDS = {"mixed", "mixed-integer"}
# Cell types a column mixing text and numbers may hold (JSON or pandas scalars).
_SCALAR_TYPES = (str, int, float, bool, np.integer, np.floating, np.bool_, type(None))


def _first(mask: np.ndarray | pd.Series) -> int:
    return int(np.argmax(np.asarray(mask)))


# scikit-learn reads float labels as classes only if each equals its int64 cast.
_CLASS_BOUND = 2.0**63


def first_non_class(numbers: np.ndarray) -> int | None:
    """The first finite number that is no class label: a fraction, or a whole number past int64.

    TabPFN's classifier, like tabpfn-client's own (locally, with scikit-learn's
    `check_classification_targets`), takes numeric labels only when every one is
    whole: 1.0 and 2.0 are classes, 0.5 makes the target "continuous" and the
    fit fails upstream, after the job has queued and spent the user's quota.
    """
    with np.errstate(invalid="ignore"):
        bad = (numbers != np.trunc(numbers)) | (np.abs(numbers) >= _CLASS_BOUND)
    return _first(bad) if bad.any() else None


def not_a_class(where: str, row: int, value: float) -> ValidationFailed:
    """The refusal of a number as a class label; `where` names its cell."""
    return ValidationFailed(
        f"{where} is {float(value)!r}, not a class label: numbers as classes must be whole "
        f"(within ±{_CLASS_BOUND:.2g}). To predict a continuous target, use task 'regression'.",
        row=row,
    )


def _numbers(values: pd.Series, where: str, *, float32: bool = True) -> pd.Series:
    """float64 numbers; past float32's range refused (`float32=False`: only infinities)."""
    try:
        array = values.to_numpy(dtype="float64", na_value=np.nan)
    except OverflowError as exc:
        # An integer too large for any float (JSON allows 4300 digits): past float32's
        # range like 1e400, and the same refusal. Found cell by cell: an error path.
        row = next((i for i, value in enumerate(values) if past_float32(value)), None)
        if row is None:
            raise ValidationFailed(f"{where} holds a number out of range: {exc}.") from exc
        raise out_of_range(where, row, values.iloc[row]) from exc
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"{where} holds a number out of range: {exc}.") from exc
    if float32:
        check_numbers(array, where)
    else:
        infinite = np.isinf(array)
        if infinite.any():
            raise out_of_range(where, _first(infinite), float(array[_first(infinite)]))
    return pd.Series(array, index=values.index, dtype="float64")


def _text(values: pd.Series) -> pd.Series:
    """Cells as str, missing ones as None."""
    missing = values.isna().to_numpy()
    text = values.astype(str).astype(object)
    if missing.any():
        text[missing] = None
    return text


def _iso_datetimes(values: pd.Series) -> pd.Series:
    """datetime64 cells as ISO 8601 text: dates alone when every time is midnight."""
    suffix = ""
    if getattr(values.dt, "tz", None) is not None:
        values, suffix = values.dt.tz_convert("UTC").dt.tz_localize(None), "Z"
    stamps = values.to_numpy()
    missing = np.isnat(stamps)
    present = stamps[~missing]
    units = ["s", "ms", "us", "ns"] if suffix else ["D", "s", "ms", "us", "ns"]
    unit = next(u for u in units if (present.astype(f"datetime64[{u}]") == present).all())
    text = np.datetime_as_string(stamps, unit=unit).astype(object)
    if suffix:
        text = text + suffix
    text[missing] = None
    return pd.Series(text, index=values.index, dtype=object)


def _mixed_column(values: pd.Series, where: str) -> pd.Series:
    """A column of several cell types: text if any cell is text, else numbers."""
    cell_types = values.map(type)
    found = pd.unique(cell_types)
    refused = [t for t in found if not issubclass(t, _SCALAR_TYPES)]
    if refused:
        row = _first(cell_types.isin(refused))
        raise ValidationFailed(
            f"{where}, row {row} is a {refused[0].__name__}; "
            "cells must be numbers, strings, booleans or null."
        )
    if not any(issubclass(t, str) for t in found):
        return _numbers(values, where)
    # Numbers in a text column become text, but infinity is no value to write down.
    floats = cell_types.isin([t for t in found if issubclass(t, float | np.floating)])
    infinite = np.isinf(values[floats].to_numpy(dtype="float64"))
    if infinite.any():
        row = int(np.flatnonzero(floats.to_numpy())[_first(infinite)])
        raise out_of_range(where, row, float(values.iloc[row]))
    return _text(values)


def _object_column(values: pd.Series, where: str) -> pd.Series:
    kind = ptypes.infer_dtype(values, skipna=True)
    if kind == "string":
        return _text(values)
    if kind == "empty":
        return pd.Series(np.nan, index=values.index, dtype="float64")
    if kind in _NUMBER_KINDS:
        return _numbers(values, where)
    if kind == "date":
        return _text(values)  # str(date) is ISO 8601
    if kind in _DATE_KINDS:
        try:
            return _iso_datetimes(pd.to_datetime(values))
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValidationFailed(f"{where} holds dates that cannot be read: {exc}.") from exc
    if kind == "time":
        return _text(values)  # str(time) is ISO 8601
    if kind in _MIXED_KINDS:
        return _mixed_column(values, where)
    raise ValidationFailed(
        f"{where} holds {kind} values; cells must be numbers, strings, booleans, dates or null."
    )


def _column(values: pd.Series, where: str) -> pd.Series:
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _object_column(values.astype(object), where)
    if ptypes.is_bool_dtype(dtype) or (
        ptypes.is_numeric_dtype(dtype) and not ptypes.is_complex_dtype(dtype)
    ):
        return _numbers(values, where)
    if ptypes.is_datetime64_any_dtype(dtype):
        return _iso_datetimes(values)
    if ptypes.is_object_dtype(dtype) or ptypes.is_string_dtype(dtype):
        return _object_column(values.astype(object), where)
    raise ValidationFailed(
        f"{where} has type {dtype}; cells must be numbers, strings, booleans, dates or null."
    )


NUL = "\x00"


def holds_nul(where: str) -> ValidationFailed:
    """The refusal of a NUL character (U+0000) in a name, a label, an option or metadata.

    Those are stored as PostgreSQL text or JSON, which cannot hold NUL (a label
    failed the job after its fit, storing the classes; an option was a 503), and
    the upstream cut a column name at it. Text cells are not checked: they are
    stored and sent as Parquet, which holds any text, and come back in no result.
    """
    return ValidationFailed(
        f"{where} holds a NUL character (U+0000), which cannot be stored: remove it."
    )


def check_column_names(names: Sequence[Any], *, name: str) -> list[str]:
    """The names as text: unique, not the target's, without NUL (JSON and uploads alike)."""
    names = [str(n) for n in names]
    nul = next((n for n in names if NUL in n), None)
    if nul is not None:
        raise holds_nul(f"{name}: the column name {nul!r}")
    if len(set(names)) != len(names):
        seen: set[str] = set()
        twice = sorted({n for n in names if n in seen or seen.add(n)})
        raise ValidationFailed(f"{name}: column names must be unique; repeated: {twice}.")
    if TARGET_COLUMN in names:
        raise ValidationFailed(f"{name}: the column name {TARGET_COLUMN!r} is reserved.")
    return names


def table_from_frame(
    frame: pd.DataFrame, *, name: str, text_columns: Collection[str] = ()
) -> pd.DataFrame:
    """Validate a feature table and normalize it to text and float64 columns.

    Numbers past float32's range (infinities too), and cells that are objects
    or lists, are refused (422). `text_columns`: columns a model was fitted on
    as text, kept text here whatever their cells (see `_as_fitted`).
    """
    if frame.shape[1] == 0:
        raise ValidationFailed(f"{name} has no columns.")
    if len(frame) == 0:
        raise ValidationFailed(f"{name} has no rows.")
    names = check_column_names(list(frame.columns), name=name)
    data = {}
    for j, column in enumerate(names):
        values = frame.iloc[:, j]
        data[column] = _column(values, f"{name}: column {column!r}")
        if column in text_columns:
            data[column] = _as_fitted(values, data[column])
    table = pd.DataFrame(data, copy=False)
    table.index = pd.RangeIndex(len(table))
    return table


def _as_fitted(values: pd.Series, checked: pd.Series) -> pd.Series:
    """A column the model was fitted on as text, as text: its numbers written as the
    fit wrote the numbers of a text column (101 as "101", 2.5 as "2.5").

    A test column of numbers alone would otherwise be sent as float64, and 101
    met the model as 101.0, a category the fit never saw ("101"): every row of
    it predicted as an unseen value, with no error. Checked first (`checked`),
    so the same cells are refused as in any other column.
    """
    if checked.dtype == object:
        return checked
    return _text(values.astype(object))


def _frame_from_columns(X: Mapping[str, Any], name: str) -> pd.DataFrame:
    if not X:
        raise ValidationFailed(f"{name}.X has no columns.")
    lengths = {}
    for column, values in X.items():
        if not isinstance(values, list):
            raise ValidationFailed(f"{name}.X[{column!r}] is not a list of values.")
        lengths[column] = len(values)
    if len(set(lengths.values())) > 1:
        raise ValidationFailed(f"{name}.X columns must all have the same length; got {lengths}.")
    return pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in X.items()}, copy=False)


def _frame_from_records(X: Sequence[Any], name: str) -> pd.DataFrame:
    columns: dict[str, None] = {}
    for i, record in enumerate(X):
        if not isinstance(record, dict):
            raise ValidationFailed(f"{name}.X[{i}] is not an object; use all rows or all records.")
        columns.update(dict.fromkeys(record))
    return pd.DataFrame(
        {c: pd.Series([r.get(c) for r in X], dtype=object) for c in columns}, copy=False
    )


_NUMERIC_CELLS = {"floating", "integer", "mixed-integer-float"}


def _numeric_matrix(X: Sequence[Any]) -> np.ndarray | None:
    """Rows of plain numbers and nulls as one float64 matrix, or None for anything else.

    The common case (a numeric table) in a few vectorized steps instead of a
    validation per column; any text, boolean, nested value, uneven row or
    number past float32's range returns None, and the general path decides (and words the error).
    """
    try:
        cells = np.array(X, dtype=object)
    except ValueError:
        return None
    if cells.ndim != 2 or cells.shape[1] == 0:
        return None
    if ptypes.infer_dtype(cells.ravel(), skipna=True) not in _NUMERIC_CELLS:
        return None
    try:
        matrix = cells.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if first_out_of_range(matrix.ravel()) is not None else matrix


def _row_names(width: int, columns: Sequence[str] | None, name: str) -> list[str]:
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
    return check_column_names(names, name=name)


def _frame_from_rows(X: Sequence[Any], columns: Sequence[str] | None, name: str) -> pd.DataFrame:
    width = len(X[0]) if isinstance(X[0], list) else 0
    for i, row in enumerate(X):
        if not isinstance(row, list):
            raise ValidationFailed(f"{name}.X[{i}] is not a list; use all rows or all records.")
        if len(row) != width:
            raise ValidationFailed(
                f"{name}.X[{i}] has {len(row)} values but the first row has {width}."
            )
    names = _row_names(width, columns, name)
    return pd.DataFrame(
        {c: pd.Series(v, dtype=object) for c, v in zip(names, zip(*X, strict=True), strict=True)},
        copy=False,
    )


def names_columns(X: Any, columns: Sequence[str] | None) -> bool:
    """Whether JSON data names its columns (records, columns, or rows with `columns`)."""
    return columns is not None or isinstance(X, Mapping) or (bool(X) and isinstance(X[0], dict))


def table_from_json(
    X: Any, columns: Sequence[str] | None, *, name: str, text_columns: Collection[str] = ()
) -> pd.DataFrame:
    """Build a feature table from rows (lists), records (objects) or columns (an object of lists).

    Columns that hold any text become text columns (numbers in them become
    text too); the rest are numeric. Missing values are null. `text_columns`
    (names as the table names them) are text whatever their cells: a test
    set's columns that its model was fitted on as text.
    """
    if isinstance(X, Mapping):
        if columns is not None:
            raise ValidationFailed(f"{name}.columns is only for rows; X already names its columns.")
        frame = _frame_from_columns(X, name)
    elif not X:
        raise ValidationFailed(f"{name}.X has no rows.")
    elif isinstance(X[0], dict):
        if columns is not None:
            raise ValidationFailed(f"{name}.columns is only for rows; records name their columns.")
        frame = _frame_from_records(X, name)
    else:
        matrix = _numeric_matrix(X) if isinstance(X[0], list) and not text_columns else None
        if matrix is not None:
            # Already what table_from_frame makes of numbers: float64, NaN for null.
            names = _row_names(matrix.shape[1], columns, name)
            return pd.DataFrame(matrix, columns=names)
        frame = _frame_from_rows(X, columns, name)
    return table_from_frame(frame, name=f"{name}.X", text_columns=text_columns)


def labels_from_series(y: pd.Series, *, task: str, name: str) -> pd.Series:
    """Validate a target: classes for classification, finite numbers for regression."""
    missing = y.isna().to_numpy()
    if missing.any():
        raise ValidationFailed(f"{name}[{_first(missing)}] is null; every row needs a target.")
    kind = ptypes.infer_dtype(y, skipna=False)
    if kind in _MIXED_KINDS:
        scalar = y.map(lambda v: isinstance(v, _SCALAR_TYPES)).to_numpy()
        if not scalar.all():
            raise ValidationFailed(f"{name}[{_first(~scalar)}] must be a number or a string.")
        if task == CLASSIFICATION:
            raise ValidationFailed(
                f"{name} mixes text and numbers (or booleans); use one type of label."
            )
    if task == CLASSIFICATION:
        if kind == "string":
            labels = y.astype(object)
            # The few classes first (a quarter of the time of a look at every row).
            if any(NUL in label for label in pd.unique(labels.to_numpy())):
                row = next(i for i, label in enumerate(labels) if NUL in label)
                raise holds_nul(f"{name}[{row}]")
        elif kind == "integer":
            try:
                labels = y.astype("int64")
            except (OverflowError, ValueError) as exc:
                raise ValidationFailed(f"{name} holds an integer out of range.") from exc
        elif kind == "boolean":
            labels = y.astype(bool)
        elif kind in _NUMBER_KINDS:
            labels = _numbers(y, name, float32=False)  # any whole number is a class
            row = first_non_class(labels.to_numpy())
            if row is not None:
                raise not_a_class(f"{name}[{row}]", row, labels.iloc[row])
        else:
            raise ValidationFailed(f"{name} holds {kind} values; use numbers or strings as labels.")
        labels = labels.reset_index(drop=True)
        if labels.nunique() < 2:
            raise ValidationFailed(f"{name} has a single class; classification needs two or more.")
        return labels
    if kind not in _NUMBER_KINDS - {"boolean"}:
        raise ValidationFailed(f"{name} must hold finite numbers for regression, not {kind}.")
    return _numbers(y, name).reset_index(drop=True)


def labels_from_json(y: Sequence[Any], *, task: str, n_rows: int) -> pd.Series:
    if len(y) != n_rows:
        raise ValidationFailed(f"train.y has {len(y)} values but train.X has {n_rows} rows.")
    return labels_from_series(pd.Series(y, dtype=object), task=task, name="train.y")


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


def as_fitted_numbers(table: pd.DataFrame, numeric: Collection[str], name: str) -> pd.DataFrame:
    """Test columns the model was fitted on as numbers, as numbers: a text cell that
    reads as one ("3") becomes it, any other is refused, naming its row.

    Sent on as text, such a column met a model that knew it as numbers: its every
    cell, the numbers too, went upstream as a string, and the job failed there
    (its quota spent) or was answered from values the fit never saw.
    """
    for column in numeric:
        values = table[column]
        if values.dtype != object:
            continue
        numbers = []
        for row, value in enumerate(values):
            number = _as_number(value)
            if number is None:
                raise ValidationFailed(
                    f"{name}: column {column!r} was fitted as numbers, and row {row} holds "
                    f"{value!r}: send a number, or null for a missing value."
                )
            numbers.append(number)
        where = f"{name}: column {column!r}"
        table[column] = _numbers(pd.Series(numbers, index=values.index, dtype=float), where)
    return table


def _as_number(value: Any) -> float | None:
    """A cell of a column fitted as numbers as the number it is, or None if it is none.
    Booleans are 1 and 0 as in a column of booleans alone (a mixed column holds them
    as "True" and "False"); a number too large for a float is infinite, and refused
    as out of range by the check after."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    text = value.strip() if isinstance(value, str) else value
    if text in (True, "True"):
        return 1.0
    if text in (False, "False"):
        return 0.0
    try:
        return float(text)
    except OverflowError:
        return math.inf
    except (TypeError, ValueError):
        return None


def encode_table(table: pd.DataFrame) -> BinaryIO:
    """The table as LZ4 Parquet, in an Arrow buffer read like a file (closed once stored).

    Only JSON bodies come here (at most MAX_REQUEST_BYTES, and already a
    DataFrame in memory); uploads are encoded batch by batch to disk, with
    zstd (shared/tables/table_ingest.py). Here the encode is on every submit's
    path: LZ4 without column statistics (nothing reads them) costs a third of
    zstd's CPU for a few percent more bytes, and is the submit's largest single
    step for a small table. Arrow writes into its own buffer without a Python
    call per write.
    """
    sink = pa.BufferOutputStream()
    # What DataFrame.to_parquet does, without its per-call path and option handling
    # (a millisecond per table, on every submit).
    pq.write_table(
        _arrow_table(table),
        sink,
        compression="lz4",
        write_statistics=False,
    )
    return pa.BufferReader(sink.getvalue())


def _arrow_table(table: pd.DataFrame) -> pa.Table:
    """The frame as Arrow; numbers and booleans column by column, without pandas metadata.

    For the usual all-numeric table, `Table.from_pandas` spends most of its
    time describing the frame for pandas (metadata a reader does not need: the
    index is dropped and the columns are named either way); anything else
    (text, mixed, categorical) goes through it.
    """
    if all(dtype.kind in "fib" for dtype in table.dtypes):
        names = [str(name) for name in table.columns]
        return pa.table([table[name].to_numpy() for name in table.columns], names=names)
    return pa.Table.from_pandas(table, preserve_index=False)


# Below this many bytes a table is decoded on the caller's thread: handing each
# column to Arrow's thread pool and back cost a 500 x 11 table a third of its
# decode's wall time (0.88 against 0.63 ms), with nothing to split.
_THREADED_DECODE_BYTES = 1 << 20


def decode_table(data: bytes) -> pd.DataFrame:
    # What pandas.read_parquet does for a buffer, without its path handling and
    # without the dataset layer of pq.read_table (half the time for small tables).
    threads = len(data) > _THREADED_DECODE_BYTES
    parquet = pq.ParquetFile(pa.BufferReader(data))
    table = parquet.read(use_threads=threads, use_pandas_metadata=True)
    return table.to_pandas(use_threads=threads)


def split_train(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    return table.drop(columns=[TARGET_COLUMN]), table[TARGET_COLUMN]
