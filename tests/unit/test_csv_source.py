"""A CSV upload read by CsvSource arrives whole: header, every row, every value.

Arrow's CSV reader reads ahead on a thread of its own. A reader opened only for
the header kept reading the spooled file after CsvSource had what it wanted,
while the next reader read it from the start: the two moved one file position,
and a valid upload was now and then refused ("line 2 has 20 fields but the
header has 13"; seen in the upload benchmark). With reads of 5 ms, as from a
spooled file on a busy disk, the old reader failed 8 of 10 runs of a loop like
the integrity test below, and one run in three of that test itself; the first
test checks the cause directly.
"""

from __future__ import annotations

import io
import threading
import time

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from shared.core.errors import ValidationFailed
from shared.tables.table_ingest import Target, ingest_upload
from shared.tables.upload_sources import CSV_BLOCK_BYTES, CsvSource

COLUMNS = [f"f{j}" for j in range(18)] + ["kind", "day"]
ROWS = 60_000  # about 6 MiB: a dozen of the reader's blocks


class SlowReads(io.BytesIO):
    """Every read takes a few milliseconds (the GIL is let go meanwhile)."""

    def read(self, size: int | None = -1) -> bytes:
        time.sleep(0.005)
        return super().read(size)


def _csv() -> bytes:
    lines = [",".join(COLUMNS)]
    lines += [
        ",".join([f"{i}.{j}" for j in range(18)] + ["red" if i % 2 else "blue", "2024-01-01"])
        for i in range(ROWS)
    ]
    return ("\n".join(lines) + "\n").encode()


def test_no_reader_of_arrow_touches_the_file_for_the_header() -> None:
    """The header is read from a copy of the file's first line: Arrow's read-ahead
    thread, which outlived the old header reader by a read or two (their timing
    is the machine's), never reads the shared file before plan() opens it."""

    class Recording(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.readers: list[str] = []

        def read(self, size: int | None = -1) -> bytes:
            self.readers.append(threading.current_thread().name)
            return super().read(size)

    file = Recording(_csv())
    CsvSource(file, "test_file")
    time.sleep(0.05)
    assert file.readers == [threading.current_thread().name]


def test_the_reader_for_the_header_does_not_disturb_the_reads_after_it() -> None:
    data = _csv()
    assert len(data) > 8 * CSV_BLOCK_BYTES
    for _ in range(5):
        source = CsvSource(SlowReads(data), "test_file")
        assert source.names == COLUMNS
        columns = source.plan(integers=set(), count_rows=lambda rows, **_: None)
        assert [c.kind for c in columns] == ["number"] * 18 + ["text", "text"]
        table = pa.Table.from_batches(list(source.batches(columns)))
        assert table.num_rows == ROWS
        assert table.column("f0").to_pylist() == [float(f"{i}.0") for i in range(ROWS)]
        assert table.column("kind").to_pylist()[:2] == ["blue", "red"]


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (b"a,b\n1,2\n", ["a", "b"]),
        (b"\xef\xbb\xbfa,b\r\n1,2\r\n", ["a", "b"]),  # a BOM, Windows line ends
        (b"a,b\r1,2\r", ["a", "b"]),  # old Mac line ends
        (b"\n\na,b\n1,2\n", ["a", "b"]),  # blank lines before the header
        (b'"x,y",z\n1,2\n', ["x,y", "z"]),  # a quoted name with a comma
        (b'"two\nlines",z\n1,2\n', ["two\nlines", "z"]),  # ... and one with a line end
        (b'"say ""hi""\r\n",z\r\n1,2\r\n', ['say "hi"\r\n', "z"]),
    ],
)
def test_the_header_is_read_as_arrow_reads_it(data: bytes, names: list[str]) -> None:
    assert CsvSource(io.BytesIO(data), "train_file").names == names


def test_a_header_row_longer_than_a_block_is_refused_by_name() -> None:
    data = ",".join(f"c{i:06d}" for i in range(80_000)).encode() + b"\n"
    with pytest.raises(ValidationFailed, match="header row is longer than 512 KiB"):
        CsvSource(io.BytesIO(data), "train_file")


def test_a_header_that_opens_a_quote_it_never_closes_is_refused_by_name() -> None:
    with pytest.raises(ValidationFailed, match="header row opens a quote it never closes"):
        CsvSource(io.BytesIO(b'"a,b\n1,2\n'), "train_file")


def _read(data: bytes) -> pa.Table:
    source = CsvSource(io.BytesIO(data), "test_file")
    columns = source.plan(integers=set(), count_rows=lambda rows, **_: None)
    return pa.Table.from_batches(list(source.batches(columns)))


def test_line_ends_inside_quoted_cells_keep_every_row_in_place() -> None:
    """Without newlines_in_values, Arrow cut its 512 KiB blocks at any line end,
    quoted or not: in a file of more than one block a row was split in two, its
    number column became text and every row after it moved by one, answered 202
    with one prediction too many (found by fuzzing the API)."""
    rows = 30_000
    for pad in range(100):  # a layout where Arrow, cutting at any line end, splits a row
        note = "first line\nsecond, with a comma" + "." * pad
        notes = [note if i % 2 else "short" for i in range(rows)]
        cells = [f'"{n}"' if "\n" in n else n for n in notes]  # quoted as pandas quotes
        data = ("x,note\n" + "".join(f"{i},{c}\n" for i, c in enumerate(cells))).encode()
        careless = pa_csv.open_csv(
            io.BytesIO(data),
            read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(["x", "note"], pa.string())
            ),
        )
        if sum(batch.num_rows for batch in careless) != rows:
            break
    else:
        pytest.fail("no layout made Arrow split a row")
    table = _read(data)
    assert table.num_rows == rows
    assert table.column("x").to_pylist() == [float(i) for i in range(rows)]
    assert table.column("note").to_pylist() == notes


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_in_a_file_of_one_column_an_empty_line_is_a_missing_value(end: bytes) -> None:
    """What pandas writes for a column with NaN. Arrow skipped empty lines, so a
    one-column test set lost its rows with a missing value, and the predictions
    came back fewer than the rows and out of place (found by fuzzing the API)."""
    data = end.join([b"", b"", b"a", b"1", b"", b"3", b"", b"5", b""])  # blank lines first
    assert _read(data).column("a").to_pylist() == [1.0, None, 3.0, None, 5.0]
    assert _read(end.join([b"a", b"1", b"2", b"", b""])).column("a").to_pylist() == [1, 2, None]


def test_in_a_wider_file_empty_lines_are_still_skipped() -> None:
    table = _read(b"a,b\n1,2\n\n3,4\n\n")
    assert table.column("a").to_pylist() == [1.0, 3.0]
    assert table.column("b").to_pylist() == [2.0, 4.0]


def test_a_file_split_by_semicolons_is_named_as_such_when_it_has_no_features() -> None:
    """The console offered the one column of a semicolon-separated file as the target,
    and the answer was "train_file has no columns"."""
    with pytest.raises(ValidationFailed, match="reads as one column, 'a;b;y': CSV files are comma"):
        ingest_upload(
            io.BytesIO(b"a;b;y\n1;2;x\n3;4;z\n"),
            "train.csv",
            name="train_file",
            target=Target("a;b;y", "classification"),
        )
