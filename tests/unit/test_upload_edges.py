"""Tables as users write them, read as they meant them, or refused with what to change:
spaces around numbers, a column fitted as numbers that holds words, pandas' index
column, a semicolon-separated or cp1252 file, a Parquet file's damaged pandas note."""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.core.errors import NumberOutOfRange, ValidationFailed
from shared.tables import table_ingest
from shared.tables.payloads import as_fitted_numbers, table_from_json
from shared.tables.table_ingest import Target, ingest_upload


@pytest.fixture(autouse=True)
def _no_upstream(monkeypatch):
    monkeypatch.setattr(table_ingest, "upstream_limits", lambda: None)


def _stored(data: bytes, filename: str = "train.csv", **kwargs) -> pd.DataFrame:
    stored = ingest_upload(io.BytesIO(data), filename, name="train_file", **kwargs)
    return pq.read_table(stored.file).to_pandas()


def test_spaces_around_numbers_keep_a_column_numeric_and_its_classes_whole() -> None:
    """pandas and Arrow's reader read " 2" as 2; the first pass read the column as
    text, and " 0", " 1" and "1" were three classes."""
    table = _stored(b"a,b,y\n1, 2, 0\n2, 3 ,1\n3,4,1\n", target=Target("y", "classification"))
    assert table["b"].tolist() == [2.0, 3.0, 4.0]
    assert sorted(set(table.iloc[:, -1].tolist())) == [0, 1]


def test_a_column_fitted_as_numbers_that_holds_words_is_refused() -> None:
    data = b"a,b\n1,2\n?,3\n"
    with pytest.raises(ValidationFailed, match=r"column 'a' was fitted as numbers"):
        _stored(data, "test.csv", model_columns=["a", "b"], numeric_columns={"a", "b"})
    # A model fitted before text columns were recorded: not known, not refused.
    assert _stored(data, "test.csv", model_columns=["a", "b"])["a"].tolist() == ["1", "?"]
    # Fitted as text: its numbers stay text.
    kept = _stored(b"a,b\n1,2\n", "test.csv", model_columns=["a", "b"], text_columns={"a"},
                   numeric_columns={"b"})  # fmt: skip
    assert kept["a"].tolist() == ["1"]


def test_json_text_in_a_column_fitted_as_numbers_is_a_number_or_refused() -> None:
    table = table_from_json([[1, "3"], [2, None]], None, name="test")
    table.columns = ["a", "b"]
    assert as_fitted_numbers(table, ["a", "b"], "test")["b"].tolist()[0] == 3.0
    words = table_from_json([[1, "3"], [2, "unknown"]], None, name="test")
    words.columns = ["a", "b"]
    with pytest.raises(ValidationFailed, match=r"column 'b' was fitted as numbers, and row 1"):
        as_fitted_numbers(words, ["a", "b"], "test")
    # Booleans beside text are 1 and 0, as in a column of booleans alone; a number too
    # large for a float is out of range, not "not a number".
    mixed = table_from_json([[True, "3"], ["False", "1e400"]], None, name="test")
    mixed.columns = ["a", "b"]
    assert as_fitted_numbers(mixed.iloc[:1].copy(), ["a", "b"], "test").values.tolist() == [
        [1.0, 3.0]
    ]
    with pytest.raises(NumberOutOfRange, match="row 1 is out of range"):
        as_fitted_numbers(mixed, ["a", "b"], "test")


@pytest.mark.parametrize("data", [b",a,y\n0,5,0\n1,6,1\n", b"a,y,\n5,0,\n6,1,\n"])
def test_a_column_without_a_name_is_refused_with_the_likely_cause(data: bytes) -> None:
    """pandas' to_csv() writes the index as a column named "": it was stored as a
    feature (the row number), and a trailing comma as a column of nothing."""
    with pytest.raises(ValidationFailed, match=r"has no name.*index=False"):
        _stored(data, target=Target("y", "classification"))


def test_a_semicolon_separated_file_is_named_when_its_target_is_not_found() -> None:
    with pytest.raises(ValidationFailed, match="reads as one column, 'a;b;y'"):
        _stored(b"a;b;y\n1;2;0\n", target=Target("y", "classification"))


def test_a_cp1252_file_is_told_to_be_saved_as_utf8() -> None:
    data = "a,city,y\n1,café,0\n2,Zürich,1\n".encode("cp1252")
    with pytest.raises(ValidationFailed, match=r"not UTF-8 text.*save it as UTF-8"):
        _stored(data, target=Target("y", "classification"))


def test_a_parquet_file_with_a_damaged_pandas_note_is_read() -> None:
    table = pa.table({"a": [1.0, 2.0], "y": [0, 1]})
    for note in (
        b"{not json",
        json.dumps(["a list"]).encode(),
        json.dumps({"index_columns": 3}).encode(),
    ):
        buffer = io.BytesIO()
        pq.write_table(table.replace_schema_metadata({b"pandas": note}), buffer)
        stored = _stored(buffer.getvalue(), "train.parquet", target=Target("y", "classification"))
        assert stored["a"].tolist() == [1.0, 2.0]


def test_a_quote_inside_an_unquoted_header_name_is_a_character() -> None:
    """`size 5"` (an inch mark) was taken for a quote the header never closed."""
    from shared.tables.upload_sources import CsvSource

    source = CsvSource(io.BytesIO(b'a,size 5",y\n1,2,0\n'), "train_file")
    assert source.names == ["a", 'size 5"', "y"]
    quoted = CsvSource(io.BytesIO(b'"x, ""y""",b\n1,2\n'), "train_file")
    assert quoted.names == ['x, "y"', "b"]
    with pytest.raises(ValidationFailed, match="opens a quote it never closes"):
        CsvSource(io.BytesIO(b'a,"b\n1,2\n'), "train_file")
    # After a byte-order mark (Excel's "CSV UTF-8"), a quoted first name is still quoted.
    marked = CsvSource(io.BytesIO(b'\xef\xbb\xbf"a\nb",c\r\n1,2\r\n'), "train_file")
    assert marked.names == ["a\nb", "c"]


def test_a_label_that_reads_as_missing_says_which_words_do() -> None:
    """ "None" or "NA" as a class (a damage level, Namibia) is missing to pandas and to
    the upload; the answer said only that the row was empty."""
    with pytest.raises(ValidationFailed, match=r"row 1 is empty.*NA, N/A, None") as refused:
        _stored(b"a,y\n1,Low\n2,None\n", target=Target("y", "classification"))
    assert refused.value.extra["row"] == 1
