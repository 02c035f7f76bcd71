"""CSV and Parquet files: uploads read into DataFrames, results written out as tables.

Uploads are read from the file object they were spooled to, never from a
copy of their bytes, so a file is held in memory once, as the DataFrame.
The format comes from the content (Parquet starts with `PAR1`); the name's
extension must agree with it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
from pathlib import PurePath
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api.types import infer_dtype, is_object_dtype

from shared.errors import FileFormatMismatch, UnsupportedFile, ValidationFailed

PARQUET_MAGIC = b"PAR1"
CSV = "csv"
PARQUET = "parquet"
_EXTENSIONS = {".csv": CSV, ".parquet": PARQUET, ".pq": PARQUET, ".parq": PARQUET}
MEDIA_TYPES = {
    CSV: "text/csv; charset=utf-8",
    PARQUET: "application/vnd.apache.parquet",
}
_SNIFF_BYTES = 4096


def file_digest(file: BinaryIO) -> str:
    """SHA-256 of a file, read in chunks from where it is spooled; leaves it rewound."""
    file.seek(0)
    digest = hashlib.file_digest(file, "sha256").hexdigest()
    file.seek(0)
    return digest


def detect_format(file: BinaryIO, filename: str | None, *, name: str) -> str:
    """csv or parquet, by content; a name whose extension says otherwise is refused."""
    file.seek(0)
    head = file.read(_SNIFF_BYTES)
    file.seek(0)
    if not head:
        raise ValidationFailed(f"{name} is empty.")
    found = PARQUET if head.startswith(PARQUET_MAGIC) else CSV
    if found == CSV and b"\x00" in head:
        raise UnsupportedFile(
            f"{name} is neither CSV nor Parquet (it holds binary data); "
            "send a .csv (UTF-8, comma-separated, header row) or a .parquet file."
        )
    extension = PurePath(filename or "").suffix.lower()
    if not extension:
        return found
    declared = _EXTENSIONS.get(extension)
    if declared is None:
        raise UnsupportedFile(
            f"{name} is {filename!r}: {extension} files are not supported; "
            "send a .csv or a .parquet file."
        )
    if declared != found:
        raise FileFormatMismatch(
            f"{name} is named {filename!r} but its content is {found.upper()}, "
            f"not {declared.upper()}; rename it or send the right file.",
            declared=declared,
            detected=found,
        )
    return found


def _sentence(exc: Exception) -> str:
    return " ".join(str(exc).split()).rstrip(".")


def _csv_header(file: BinaryIO, name: str) -> list[str]:
    line = file.readline(1 << 20)
    file.seek(0)
    try:
        return next(csv.reader([line.decode("utf-8-sig")]), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValidationFailed(f"{name}: its CSV header cannot be read: {_sentence(exc)}.") from exc


def _read_csv(file: BinaryIO, name: str) -> pd.DataFrame:
    # pandas renames repeated names ("a", "a.1"): catch them in the header itself.
    header = [c for c in _csv_header(file, name) if c]
    if len(set(header)) != len(header):
        twice = sorted({c for c in header if header.count(c) > 1})
        raise ValidationFailed(f"{name}: column names must be unique; repeated: {twice}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            frame = pd.read_csv(file, encoding="utf-8-sig")
        return _retype_mixed(frame, file)
    except pd.errors.EmptyDataError as exc:
        raise ValidationFailed(f"{name} has no data: {_sentence(exc)}.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ValidationFailed(f"{name} is not a CSV file we can read: {_sentence(exc)}.") from exc


def _retype_mixed(frame: pd.DataFrame, file: BinaryIO) -> pd.DataFrame:
    """Columns that the chunked parser typed as numbers in some chunks and text in
    others, read again as the text they are (low_memory parsing keeps the peak
    near the file's size; tokenizing it whole costs four times that)."""
    mixed = [
        column
        for column, dtype in frame.dtypes.items()
        if is_object_dtype(dtype)
        and infer_dtype(frame[column], skipna=True) not in ("string", "empty", "boolean")
    ]
    if mixed:
        file.seek(0)
        text = pd.read_csv(file, encoding="utf-8-sig", usecols=mixed, dtype=str)
        for column in mixed:
            frame[column] = text[column]
    return frame


def _read_parquet(file: BinaryIO, name: str) -> pd.DataFrame:
    try:
        table = pq.read_table(file)
        # self_destruct frees each Arrow column once converted: one copy, not two.
        return table.to_pandas(self_destruct=True, split_blocks=True)
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise ValidationFailed(
            f"{name} is not a Parquet file we can read: {_sentence(exc)}."
        ) from exc


def read_table_file(file: BinaryIO, filename: str | None, *, name: str) -> pd.DataFrame:
    """An uploaded CSV or Parquet file as a DataFrame (not yet validated)."""
    if detect_format(file, filename, name=name) == PARQUET:
        return _read_parquet(file, name)
    return _read_csv(file, name)


def pop_target(frame: pd.DataFrame, target: str, *, name: str) -> pd.Series:
    """Take the target column out of an uploaded train set (in place)."""
    if target not in frame.columns:
        columns = [str(c) for c in frame.columns]
        shown = columns if len(columns) <= 30 else [*columns[:30], "…"]
        raise ValidationFailed(
            f"{name} has no column {target!r} to use as the target; its columns are {shown}.",
            columns=columns,
        )
    return frame.pop(target)


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def result_table(result: dict[str, Any]) -> pd.DataFrame:
    """A job's result as a table.

    Predictions: one row per input row, in input order; columns `prediction`,
    then `proba_<class>` per class, or `q_<quantile>` per quantile. A fit:
    one row of its fields (lists as JSON text).
    """
    if "predictions" not in result:
        return pd.DataFrame({k: [_cell(v)] for k, v in result.items()})
    columns: dict[str, Any] = {"prediction": result["predictions"]}
    if "probabilities" in result:
        probabilities = pd.DataFrame(result["probabilities"], dtype="float64")
        for j, label in enumerate(result["classes"]):
            columns[f"proba_{label}"] = probabilities.iloc[:, j].to_numpy()
    for quantile, values in (result.get("quantiles") or {}).items():
        columns[f"q_{quantile}"] = values
    return pd.DataFrame(columns)


def write_table(table: pd.DataFrame, fmt: str) -> bytes:
    if fmt == CSV:
        return table.to_csv(index=False).encode()
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()
