"""CSV cells a spreadsheet would run as formulas, made inert (OWASP, "CSV Injection").

A result's class labels and the column names made from them are the user's own
text, and a CSV download is often opened in Excel, LibreOffice or Google
Sheets, which run a cell starting with `=`, `+`, `-` or `@` (and, after a tab
or carriage return, the same) as a formula: `=HYPERLINK(...)` or a DDE call.
Such a text cell gets a leading single quote, which spreadsheets show as text.

Only text is escaped: numbers are written as numbers (-1.5 stays -1.5), and so
is text that is only a number ("-1.5" as a label), which a spreadsheet reads as
that number and never as a formula. JSON and Parquet results are never changed.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A plain decimal number, optionally signed, with an optional exponent.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def escape_formula(cell: Any) -> Any:
    """`cell` with a leading `'` when it is text a spreadsheet would run; anything
    else (numbers, missing values, harmless text) as it is."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def escape_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of `table` with its text cells and column names escaped; numeric
    columns are left as they are (they hold no text)."""
    escaped = table.rename(columns=escape_formula)
    # By position: two labels may give the same column name ("1" and 1).
    for position in range(escaped.shape[1]):
        column = escaped.iloc[:, position]
        if pd.api.types.is_object_dtype(column.dtype) or pd.api.types.is_string_dtype(column.dtype):
            escaped.isetitem(position, column.map(escape_formula))
    return escaped
