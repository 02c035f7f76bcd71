"""CSV and Parquet files: which format an upload is, and results written out as tables.

The format comes from the content (Parquet starts with `PAR1`); the name's
extension must agree with it. Uploads are read by shared/tables/table_ingest.py.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import PurePath
from typing import Any, BinaryIO

import pandas as pd

from shared.core.errors import FileFormatMismatch, UnsupportedFile, ValidationFailed
from shared.tables import formula_escape

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
    # In the quantiles' order: the result is stored as JSONB, which orders an
    # object's keys by length first ("0.1", "0.9", then "0.05").
    quantiles = result.get("quantiles") or {}
    for quantile in sorted(quantiles, key=float):
        columns[f"q_{quantile}"] = quantiles[quantile]
    return pd.DataFrame(columns)


def write_table(table: pd.DataFrame, fmt: str, *, escape_formulas: bool = True) -> bytes:
    """The table as CSV or Parquet bytes. A CSV's text cells that a spreadsheet
    would run as formulas are escaped unless `escape_formulas` is false
    (shared/tables/formula_escape.py); Parquet is typed, never opened as
    formulas, and always written as it is."""
    if fmt == CSV:
        if escape_formulas:
            table = formula_escape.escape_formulas(table)
        # RFC 4180's CRLF line ends: with pandas' "\n" a cell holding a bare
        # carriage return went out unquoted, and readers split the row there.
        return table.to_csv(index=False, lineterminator="\r\n").encode()
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()
