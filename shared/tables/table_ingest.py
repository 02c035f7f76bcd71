"""Uploaded tables checked and re-encoded batch by batch, in memory independent of file size.

An upload becomes the zstd Parquet file that is stored for the job, the
same table a JSON body of the same data becomes (shared/tables/payloads.py):
feature columns as float64 numbers or text, a train set's target last.

1. Limits before decoding: a Parquet file's rows and columns come from its
   metadata, so a 1 MiB file of 30 million zeros is refused before one page
   is decompressed; a CSV file's rows are counted as the first pass reads it.
2. The plan: each column's kind (upload_sources.py).
3. The write: each batch converted, checked (numbers in float32's range,
   targets present, classes, the decoded-bytes budget) and appended to a
   spooled Parquet file. What must hold for the whole column (the kind, a
   missing target, the number of classes) is carried from batch to batch.

Peak memory is a batch of the reader plus a row group of the writer; the
file itself stays where it was spooled. Any refusal closes the output, so
nothing is stored.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.core.errors import ValidationFailed
from shared.jobs import states as js
from shared.tables.limits import (
    check_classes,
    check_decoded_bytes,
    check_test_shape,
    check_train_shape,
)
from shared.tables.number_range import check_numbers, out_of_range
from shared.tables.payloads import (
    NUL,
    TARGET_COLUMN,
    check_column_names,
    first_non_class,
    holds_nul,
    not_a_class,
)
from shared.tables.table_files import PARQUET, detect_format
from shared.tables.upload_sources import (
    BOOLEAN,
    DATE,
    EMPTY,
    INTEGER,
    NUMBER,
    NUMERIC_KINDS,
    TEXT,
    TIME,
    TIMESTAMP,
    Column,
    CsvSource,
    ParquetSource,
    iso_text,
)
from shared.upstream.account import upstream_limits

# Bytes a stored cell takes at least once decoded (a float64, or a text cell's
# offset and data): the budget check a Parquet file's metadata allows.
_MIN_CELL_BYTES = 8
# An encoded upload larger than this waits for storage on disk, not in memory.
SPOOL_BYTES = 4 * 2**20
_LABEL_TYPES = {INTEGER: pa.int64(), NUMBER: pa.float64(), BOOLEAN: pa.bool_(), TEXT: pa.string()}


@dataclass(frozen=True)
class Target:
    """A train set's target: its column in the file and the task it is for."""

    column: str
    task: str


@dataclass
class StoredTable:
    """The upload as stored: zstd Parquet (rewound; the caller closes it), feature columns, rows."""

    file: BinaryIO
    columns: list[str]
    n_rows: int
    # The feature columns stored as text (the rest are float64 numbers).
    text_columns: list[str]


def _listed(names: list[str]) -> str:
    return str(names if len(names) <= 30 else [*names[:30], "…"])


def _features(names: list[str], target: Target | None, model_columns: list[str] | None, name: str):
    """The feature columns to store, in the order to store them."""
    if target is not None and target.column not in names:
        raise ValidationFailed(
            f"{name} has no column {target.column!r} to use as the target; "
            f"its columns are {_listed(names)}{_separator(names)}.",
            columns=names,
        )
    features = [n for n in names if target is None or n != target.column]
    if not features:
        hint = _besides(target) + _separator(names)
        raise ValidationFailed(f"{name} has no feature columns{hint}.")
    if model_columns is None:
        return features
    missing = [c for c in model_columns if c not in features]
    extra = [c for c in features if c not in model_columns]
    if missing or extra:
        raise ValidationFailed(
            f"{name}'s columns do not match the model's: "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}{_separator(names)}."
        )
    return list(model_columns)


def _refuse_unnamed(names: list[str], name: str) -> None:
    """A column without a name is the index pandas' to_csv() writes, or a trailing
    comma: stored, the row number became a feature (with rows in order of the target,
    the answer itself), or a column of nothing."""
    unnamed = [j + 1 for j, column in enumerate(names) if column == ""]
    if unnamed:
        raise ValidationFailed(
            f"{name}: column {unnamed[0]} of the header has no name: a row index "
            "(pandas writes one unless told `to_csv(..., index=False)`) or a comma at the "
            "end of each line; name the column, or leave it out."
        )


def _besides(target: Target | None) -> str:
    return f" besides the target {target.column!r}" if target is not None else ""


def _separator(names: list[str]) -> str:
    """A hint when a file's one column looks like a row split by another separator."""
    if len(names) == 1 and any(mark in names[0] for mark in ";\t|"):
        return f"; its header reads as one column, {names[0][:60]!r}: CSV files are comma-separated"
    return ""


def _refuse_kind(column: Column, where: str) -> None:
    if column.kind is None:
        raise ValidationFailed(
            f"{where} has type {column.arrow_type}; "
            "cells must be numbers, strings, booleans, dates or null."
        )


def _as_float64(values: pa.Array) -> pa.Array:
    """Numbers as float64, integers past 2**53 rounded to the nearest one (an id, say).

    A safe cast refuses to round them; JSON rounds them (Python's float), and the
    same data must make the same table whichever way it came. No integer Arrow
    holds is past float32's range, which is checked after.
    """
    return pc.cast(values, pa.float64(), safe=False)


def _feature(values: pa.Array, column: Column, where: str, offset: int) -> pa.Array:
    """A batch of a feature column as stored: float64 numbers, or text."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if column.kind in NUMERIC_KINDS:
        numbers = _as_float64(values)
        check_numbers(numbers.to_numpy(zero_copy_only=False), where, offset=offset)
        return numbers
    if column.kind == TIMESTAMP:
        return iso_text(values, column.unit or "ns")
    if column.kind == TIME:
        return pa.array([None if v is None else str(v) for v in values.to_pylist()], pa.string())
    if pa.types.is_floating(values.type):  # numbers in a column the model knows as text
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
    return pc.cast(values, pa.string())  # text, or dates (ISO 8601)


# A CSV's words for a missing value, as pandas reads them: a label "None" or "NA" (a
# damage level, Namibia) reads as missing, and "row 9 is empty" said nothing of why.
_MISSING_WORDS = (
    " (a CSV cell reads as missing when it is empty or one of NA, N/A, None, null, NaN "
    "and their like, as pandas reads them: spell such a label otherwise, or send Parquet)"
)


class _Labels:
    """A target checked batch by batch: no missing value, numbers in range, the classes."""

    def __init__(
        self, column: Column, target: Target, name: str, limit: Any, *, csv: bool = False
    ) -> None:
        self.task, self.where = target.task, f"{name} column {target.column!r}"
        self.csv = csv
        self.limit = limit
        self.classes: set = set()
        kind = column.kind
        if kind is None or kind in (DATE, TIME, TIMESTAMP):
            shown = column.arrow_type if kind is None else f"{kind} values"
            raise ValidationFailed(f"{self.where} holds {shown}; use numbers or strings as labels.")
        if self.task == js.REGRESSION and kind not in (INTEGER, NUMBER, EMPTY):
            raise ValidationFailed(
                f"{self.where} must hold finite numbers for regression, not {kind} values."
            )
        if self.task == js.REGRESSION or kind == EMPTY:
            self.type = pa.float64()
        else:
            self.type = _LABEL_TYPES[kind]

    def batch(self, values: pa.Array, offset: int) -> pa.Array:
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        missing = values.is_null(nan_is_null=True)
        if pc.any(missing).as_py():
            row = offset + pc.index(missing, True).as_py()
            raise ValidationFailed(
                f"{self.where}, row {row} is empty; every row needs a target"
                f"{_MISSING_WORDS if self.csv else ''}.",
                row=row,
            )
        if pa.types.is_floating(self.type):  # a regression target, or numbers as classes
            labels = _as_float64(values)
            numbers = labels.to_numpy(zero_copy_only=False)
            if self.task == js.REGRESSION:
                check_numbers(numbers, self.where, offset=offset)
            else:
                self._check_classes(numbers, offset)
        else:
            try:
                labels = pc.cast(values, self.type)
            except (pa.ArrowInvalid, OverflowError) as exc:
                raise ValidationFailed(f"{self.where} holds a label out of range.") from exc
            if pa.types.is_string(self.type):
                nul = pc.match_substring(labels, NUL)
                if pc.any(nul).as_py():
                    raise holds_nul(f"{self.where}, row {offset + pc.index(nul, True).as_py()}")
        if self.task == js.CLASSIFICATION:
            self.classes.update(pc.unique(labels).to_pylist())
            check_classes(self.limit, len(self.classes), at_least=True)
        return labels

    def _check_classes(self, numbers: np.ndarray, offset: int) -> None:
        """Numbers as classes: whole ones of any size scikit-learn takes (not float32's range)."""
        if np.isinf(numbers).any():
            index = int(np.argmax(np.isinf(numbers)))
            raise out_of_range(self.where, offset + index, float(numbers[index]))
        index = first_non_class(numbers)
        if index is not None:
            row = offset + index
            raise not_a_class(f"{self.where}, row {row}", row, numbers[index])

    def finish(self) -> None:
        if self.task == js.CLASSIFICATION and len(self.classes) < 2:
            raise ValidationFailed(
                f"{self.where} has a single class; classification needs two or more."
            )


@contextmanager
def _output() -> Iterator[BinaryIO]:
    """A spooled temporary file, closed (so dropped) if anything is refused."""
    # Closed by the caller once stored.
    file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    try:
        yield file
    except BaseException:
        file.close()
        raise


def ingest_upload(
    file: BinaryIO,
    filename: str | None,
    *,
    name: str,
    target: Target | None = None,
    model_columns: list[str] | None = None,
    text_columns: Collection[str] = (),
    numeric_columns: Collection[str] | None = None,
) -> StoredTable:
    """Check an uploaded CSV or Parquet file and encode it for storage, batch by batch.

    `target`: a train set (the target column is stored last, as TARGET_COLUMN);
    `model_columns`: a test set for a model fitted on these columns, matched by name;
    `text_columns`: those of them the model was fitted on as text, stored as text
    whatever their cells (a CSV's cells as written: "0101" stays "0101");
    `numeric_columns`: those it was fitted on as numbers, refused when a cell is not
    one (None: not known).
    """
    fmt = detect_format(file, filename, name=name)
    source = ParquetSource(file, name) if fmt == PARQUET else CsvSource(file, name)
    if model_columns is None or "" not in model_columns:  # a model fitted on one, before
        _refuse_unnamed(source.names, name)
    names = check_column_names(source.names, name=name)
    features = _features(names, target, model_columns, name)
    width = len(features) + (target is not None)
    limit = upstream_limits()

    def count_rows(rows: int, *, at_least: bool = True) -> None:
        if target is not None:
            check_train_shape(limit, rows, len(features), at_least=at_least)
        check_decoded_bytes(rows * width * _MIN_CELL_BYTES, at_least=at_least)

    if target is None:
        check_test_shape(limit, len(features))
    # Parquet: from the metadata, before a page is read. CSV: counted in the first pass.
    if source.declared_rows is not None:
        count_rows(source.declared_rows, at_least=False)
    plan = {
        c.name: c
        for c in source.plan(integers={target.column} if target else set(), count_rows=count_rows)
    }
    order = [plan[c] for c in features] + ([plan[target.column]] if target else [])
    fitted_as_numbers = set(numeric_columns or ())
    for column in order[: len(features)]:
        _refuse_kind(column, f"{name}: column {column.name!r}")
        if column.name in text_columns and column.kind in NUMERIC_KINDS:
            # Numbers in a column the model knows as text: as text, as the fit sent them.
            column.kind = TEXT
        if column.name in fitted_as_numbers and column.kind not in NUMERIC_KINDS:
            # Sent on as text, the model met strings where its fit saw numbers: the job
            # failed upstream, its quota spent, or was answered from unseen values.
            raise ValidationFailed(
                f"{name}: column {column.name!r} was fitted as numbers, and this file holds "
                f"{column.kind} values in it (a cell that is not a number): send numbers, "
                "or leave a cell empty for a missing value."
            )
    labels = (
        _Labels(plan[target.column], target, name, limit, csv=fmt != PARQUET) if target else None
    )

    fields = [
        pa.field(c.name, pa.float64() if c.kind in NUMERIC_KINDS else pa.string())
        for c in order[: len(features)]
    ]
    if labels is not None:
        fields.append(pa.field(TARGET_COLUMN, labels.type))
    schema = pa.schema(fields)
    rows = decoded = 0
    with _output() as output:
        with pq.ParquetWriter(output, schema, compression="zstd") as writer:
            for batch in source.batches(order):
                arrays = [
                    _feature(batch.column(c.name), c, f"{name}: column {c.name!r}", rows)
                    for c in order[: len(features)]
                ]
                if labels is not None:
                    arrays.append(labels.batch(batch.column(target.column), rows))
                stored = pa.RecordBatch.from_arrays(arrays, schema=schema)
                rows += batch.num_rows
                decoded += stored.nbytes
                check_decoded_bytes(decoded, at_least=True)
                if target is not None:
                    check_train_shape(limit, rows, len(features), at_least=True)
                writer.write_batch(stored)
        if rows == 0:
            raise ValidationFailed(f"{name} has no rows.")
        if labels is not None:
            labels.finish()
        output.seek(0)
    text = [c.name for c in order[: len(features)] if c.kind not in NUMERIC_KINDS]
    return StoredTable(file=output, columns=features, n_rows=rows, text_columns=text)
