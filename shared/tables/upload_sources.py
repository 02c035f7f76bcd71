"""Uploaded CSV and Parquet files as streams of Arrow batches, and what kind each column is.

A source is read from the file it was spooled to, a batch at a time, never
whole. `plan()` says what each column holds before anything is stored:
Parquet from its schema (types are declared), CSV from a first pass that
reads every cell as text, because a single word a million rows in makes its
column text. `batches()` then reads the columns in the types the plan chose.
"""

from __future__ import annotations

import io
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from shared.core.errors import ValidationFailed

# Column kinds. Feature columns are stored as float64 (numbers) or text; a
# train set's target keeps its kind (integers, numbers, booleans or text).
EMPTY = "empty"  # every cell missing: stored as numbers
INTEGER = "integer"
NUMBER = "number"
BOOLEAN = "boolean"
TEXT = "text"
DATE = "date"  # Parquet dates, times and timestamps: stored as ISO 8601 text
TIME = "time"
TIMESTAMP = "timestamp"
NUMERIC_KINDS = {EMPTY, INTEGER, NUMBER, BOOLEAN}

# 512 KiB of CSV per batch. Arrow's reader reads about 40 blocks ahead, so the
# block size sets the reader's memory (~20 MiB), whatever the file's size.
CSV_BLOCK_BYTES = 2**19
# Parquet batches: about as many cells (1 MiB as float64), pages read 256 KiB at a time.
BATCH_CELLS = 2**17
PARQUET_READ_BUFFER = 2**18
# Wide Parquet files are read this many columns at a time (ParquetSource.batches).
COLUMN_GROUP = 16
# What pandas, which read uploads before, takes for missing values and booleans.
NULL_VALUES = [
    *pa_csv.ConvertOptions().null_values,
    *("None", "<NA>", "-nan", "-NaN"),
]
TRUE_VALUES = ["True", "TRUE", "true"]
FALSE_VALUES = ["False", "FALSE", "false"]
_BOOLEAN_TEXT = pa.array(TRUE_VALUES + FALSE_VALUES)
# A CSV line up to its end: quoted fields may hold line ends ("" is a quote inside one).
# A quote opens a field only at its start: inside an unquoted one it is a character
# (`size 5"`, an inch mark), as Arrow and pandas read it; it was taken for an opening.
_FIELD = rb'(?:"(?:[^"]|"")*"[^,\r\n]*|[^,"\r\n][^,\r\n]*|)'
_LINE = re.compile(_FIELD + rb"(?:," + _FIELD + rb")*")
_BLANK_LINES = re.compile(rb"[\r\n]*")
_BOM = b"\xef\xbb\xbf"
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_ISO_UNITS = ["D", "s", "ms", "us", "ns"]


def _batch_rows(columns: int) -> int:
    return max(1024, BATCH_CELLS // max(1, columns))


@dataclass
class Column:
    name: str
    kind: str | None  # None: a type no table cell may have (refused with `arrow_type`)
    arrow_type: pa.DataType | None = None
    unit: str | None = None  # timestamps: the coarsest ISO unit that keeps every value exact


RowCounter = Callable[[int], None]


def sentence(exc: BaseException) -> str:
    return " ".join(str(exc).split()).rstrip(".")


def _merge(seen: str, found: str) -> str:
    """The kind of a column whose cells so far were `seen` and now also `found`."""
    if seen in (EMPTY, found):
        return found
    if found == EMPTY:
        return seen
    if {seen, found} == {INTEGER, NUMBER}:
        return NUMBER
    return TEXT  # numbers beside booleans or words: text, as pandas read them


def _text_kind(values: pa.Array, *, integers: bool) -> str:
    """What a batch of CSV cells read as text would be read as."""
    present = values.drop_null()
    if len(present) == 0:
        return EMPTY
    # Arrow's CSV reader (the second pass) and pandas read " 2" as 2: spaces around a
    # number are no reason to read its column as text (a class " 1" beside "1").
    numbers = pc.utf8_trim(present, characters=" \t")  # as Arrow trims: not U+00A0
    if integers:
        try:
            pc.cast(numbers, pa.int64())
            return INTEGER
        except pa.ArrowInvalid:
            pass
    try:
        # 1e400 parses (as infinity): the column stays numeric and the range check refuses it.
        pc.cast(numbers, pa.float64())
        return NUMBER
    except pa.ArrowInvalid:
        pass
    if pc.all(pc.is_in(present, value_set=_BOOLEAN_TEXT)).as_py():
        return BOOLEAN
    return TEXT


class CsvSource:
    """A CSV upload: UTF-8 (a BOM is fine), comma-separated, a header row."""

    def __init__(self, file: BinaryIO, name: str) -> None:
        self.file, self.name = file, name
        self._bad_row: Any = None
        self._blank_lines = 0  # before the header
        with self._reading():
            self.names: list[str] = self._header()
        self.declared_rows: int | None = None

    def _header(self) -> list[str]:
        """The header row's names, parsed by Arrow from a copy of the file's first line.

        Not from a reader of the file itself: Arrow's CSV reader reads ahead on a
        thread of its own (dozens of blocks) and cannot be stopped, closed or not.
        A reader opened only for its schema went on reading the shared file
        while plan()'s reader read it from the start, each moving the other's
        position: a valid upload was refused as "line 2 has 20 fields but the
        header has 13", now and then (tests/unit/test_csv_source.py). Each reader
        of the file is now read to its end before the next one opens.
        """
        self.file.seek(0)
        block = self.file.read(CSV_BLOCK_BYTES)
        # Arrow skips blank lines before the header. The header ends at the first
        # line end outside quotes: a quoted name may hold one.
        # After a byte-order mark (Excel's "CSV UTF-8" writes one): read as part of the
        # first name, it made a quoted first name unquoted, cut at its line end.
        bom = len(_BOM) if block.startswith(_BOM) else 0
        blank = _BLANK_LINES.match(block, bom)
        self._blank_lines = len(_LINE_ENDS.findall(blank.group()))
        end = _LINE.match(block, blank.end()).end()
        if end == len(block) == CSV_BLOCK_BYTES:
            raise ValidationFailed(
                f"{self.name}: the header row is longer than {CSV_BLOCK_BYTES // 1024} KiB; "
                "shorten the column names or send the table as Parquet."
            )
        if block[end : end + 1] == b'"':
            raise ValidationFailed(f"{self.name}: the header row opens a quote it never closes.")
        head = block[: end + 1]  # the line and its end (or the whole file: one line)
        return list(self._reader(io.BytesIO(head), None, every_line=False).schema.names)

    def _note_bad_row(self, row: Any) -> str:
        self._bad_row = self._bad_row or row
        return "error"

    def _open(self, types: dict[str, pa.DataType] | None) -> pa_csv.CSVStreamingReader:
        self.file.seek(0)
        # In a file of one column a missing value is an empty line (pandas writes
        # NaN so): every line after the header is a row. In a wider file an empty
        # line cannot be a row (that would be ",,"), so it is skipped, as pandas does.
        return self._reader(self.file, types, every_line=len(self.names) == 1)

    def _reader(
        self, file: BinaryIO, types: dict[str, pa.DataType] | None, *, every_line: bool
    ) -> pa_csv.CSVStreamingReader:
        return pa_csv.open_csv(
            file,
            # One thread: Arrow then knows the line of a bad row (and two cores are shared).
            read_options=pa_csv.ReadOptions(
                block_size=CSV_BLOCK_BYTES,
                use_threads=False,
                skip_rows=self._blank_lines if every_line else 0,
            ),
            parse_options=pa_csv.ParseOptions(
                invalid_row_handler=self._note_bad_row,
                # A quoted cell may hold line ends. Without this Arrow may cut a
                # block inside one, and rows after it shift silently.
                newlines_in_values=True,
                ignore_empty_lines=not every_line,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=types,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=NULL_VALUES,
                true_values=TRUE_VALUES,
                false_values=FALSE_VALUES,
            ),
        )

    def _reading(self) -> _CsvErrors:
        return _CsvErrors(self)

    def plan(self, *, integers: set[str], count_rows: RowCounter) -> list[Column]:
        """Every cell read as text, batch by batch: the kind of each column."""
        kinds = [EMPTY] * len(self.names)
        rows = 0
        with self._reading():
            for batch in self._open(dict.fromkeys(self.names, pa.string())):
                rows += batch.num_rows
                count_rows(rows)
                for j, values in enumerate(batch.columns):
                    if kinds[j] != TEXT:
                        found = _text_kind(values, integers=self.names[j] in integers)
                        kinds[j] = _merge(kinds[j], found)
        return [Column(name, kind) for name, kind in zip(self.names, kinds, strict=True)]

    def batches(self, columns: list[Column]) -> Iterator[pa.RecordBatch]:
        types = {
            EMPTY: pa.float64(),
            INTEGER: pa.int64(),
            NUMBER: pa.float64(),
            BOOLEAN: pa.bool_(),
            TEXT: pa.string(),
        }
        with self._reading():
            yield from self._open({c.name: types[c.kind] for c in columns})


class _CsvErrors:
    """Arrow's CSV errors as one sentence naming the line, when Arrow knows it."""

    def __init__(self, source: CsvSource) -> None:
        self.source = source

    def __enter__(self) -> None:
        self.source._bad_row = None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, pa.ArrowException | UnicodeDecodeError):
            return False
        name, row = self.source.name, self.source._bad_row
        if row is not None:
            where = f"line {row.number}" if row.number is not None else "a line"
            raise ValidationFailed(
                f"{name}: {where} has {row.actual_columns} fields but the header has "
                f"{row.expected_columns}: {row.text[:80]!r}.",
                line=row.number,
            ) from exc
        if "Empty CSV file" in str(exc):
            raise ValidationFailed(f"{name} has no header row.") from exc
        if "invalid UTF8" in str(exc) or isinstance(exc, UnicodeDecodeError):
            # Excel on Windows saves "CSV" in its own code page (cp1252) by default.
            raise ValidationFailed(
                f"{name} is not UTF-8 text ({sentence(exc)}): save it as UTF-8 "
                '(Excel: "CSV UTF-8").'
            ) from exc
        raise ValidationFailed(f"{name} is not a CSV file we can read: {sentence(exc)}.") from exc


def _parquet_kind(arrow_type: pa.DataType) -> str | None:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    checks = [
        (pa.types.is_null, EMPTY),
        (pa.types.is_integer, INTEGER),
        (pa.types.is_floating, NUMBER),
        (pa.types.is_decimal, NUMBER),
        (pa.types.is_boolean, BOOLEAN),
        (pa.types.is_string, TEXT),
        (pa.types.is_large_string, TEXT),
        (pa.types.is_string_view, TEXT),
        (pa.types.is_date, DATE),
        (pa.types.is_time, TIME),
        (pa.types.is_timestamp, TIMESTAMP),
    ]
    return next((kind for check, kind in checks if check(arrow_type)), None)


def iso_unit(stamps: np.ndarray, *, tz: bool) -> int:
    """The index in _ISO_UNITS of the coarsest unit that writes every stamp exactly."""
    present = stamps[~np.isnat(stamps)]
    start = 1 if tz else 0  # a zone needs a time: no dates alone
    for index in range(start, len(_ISO_UNITS)):
        if (present.astype(f"datetime64[{_ISO_UNITS[index]}]") == present).all():
            return index
    return len(_ISO_UNITS) - 1


def timestamps(values: pa.Array) -> tuple[np.ndarray, bool]:
    """Timestamps as numpy datetime64 (in UTC when zoned) and whether they had a zone."""
    tz = values.type.tz is not None
    stamps = values.to_numpy(zero_copy_only=False)
    return stamps, tz


def iso_text(values: pa.Array, unit: str) -> pa.Array:
    stamps, tz = timestamps(values)
    missing = np.isnat(stamps)
    text = np.datetime_as_string(stamps, unit=unit).astype(object)
    if tz:
        text = text + "Z"
    text[missing] = None
    return pa.array(text, type=pa.string())


def _side_by_side(streams: list[pa.RecordBatchStreamReader]) -> Iterator[pa.RecordBatch]:
    """Batches of the same rows from streams of different columns.

    Each stream cuts its batches where its own pages end, so they are re-sliced
    (zero-copy) to the rows all of them have.
    """
    current = [stream.read_next_batch() for stream in streams]
    while True:
        rows = min(batch.num_rows for batch in current)
        if rows:
            parts = [batch.slice(0, rows) for batch in current]
            yield pa.RecordBatch.from_arrays(
                [values for part in parts for values in part.columns],
                names=[name for part in parts for name in part.schema.names],
            )
        for index, batch in enumerate(current):
            rest = batch.slice(rows)
            while rest.num_rows == 0:
                try:
                    rest = streams[index].read_next_batch()
                except StopIteration:
                    return
            current[index] = rest


class ParquetSource:
    """A Parquet upload: its metadata (rows, columns, types) is read before any data."""

    def __init__(self, file: BinaryIO, name: str) -> None:
        self.name = name
        try:
            # buffer_size: pages are read as they are decoded, not a column chunk at once.
            self.file = pq.ParquetFile(file, buffer_size=PARQUET_READ_BUFFER, pre_buffer=False)
            schema = self.file.schema_arrow
        except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
            raise ValidationFailed(
                f"{name} is not a Parquet file we can read: {sentence(exc)}."
            ) from exc
        # A DataFrame's index stored beside its columns is no column of the table.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                pandas = schema.pandas_metadata or {}
            except (ValueError, UnicodeDecodeError):  # damaged: a 500 before
                pandas = {}
        indexes = pandas.get("index_columns", []) if isinstance(pandas, dict) else []
        index = {c for c in indexes if isinstance(c, str)} if isinstance(indexes, list) else set()
        self.names = [n for n in schema.names if n not in index]
        self.types = {field.name: field.type for field in schema if field.name in self.names}
        self.declared_rows: int | None = self.file.metadata.num_rows

    def _read(self, names: list[str], batch_rows: int | None = None) -> Iterator[pa.RecordBatch]:
        batch_rows = batch_rows or _batch_rows(len(names))
        try:
            yield from self.file.iter_batches(
                batch_size=batch_rows, columns=names, use_threads=False
            )
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ValidationFailed(
                f"{self.name} is not a Parquet file we can read: {sentence(exc)}."
            ) from exc

    def plan(self, *, integers: set[str], count_rows: RowCounter) -> list[Column]:
        """Kinds from the schema; timestamps need one pass of their own columns for the unit."""
        del integers  # Parquet says which columns are integers
        count_rows(self.declared_rows or 0)
        columns = [Column(n, _parquet_kind(self.types[n]), self.types[n]) for n in self.names]
        stamped = [c for c in columns if c.kind == TIMESTAMP]
        if stamped:
            units = dict.fromkeys((c.name for c in stamped), 0)
            for batch in self.batches(stamped):
                for name, values in zip(batch.schema.names, batch.columns, strict=True):
                    stamps, tz = timestamps(values)
                    units[name] = max(units[name], iso_unit(stamps, tz=tz))
            for column in stamped:
                column.unit = _ISO_UNITS[units[column.name]]
        return columns

    def batches(self, columns: list[Column]) -> Iterator[pa.RecordBatch]:
        """The columns' batches; a wide file is read a group of columns at a time.

        A Parquet reader holds a decoded page and dictionary page of every column
        it reads (about 2 MiB each with pyarrow's defaults), so a wide file is
        first copied group by group into Arrow IPC streams on disk, which are then
        read side by side: one batch of every column in memory, no page.
        """
        names = [c.name for c in columns]
        if len(names) <= COLUMN_GROUP:
            yield from self._read(names)
            return
        batch_rows = _batch_rows(len(names))
        with ExitStack() as stack:
            streams = []
            for start in range(0, len(names), COLUMN_GROUP):
                spool = stack.enter_context(tempfile.TemporaryFile())
                writer = None
                for batch in self._read(names[start : start + COLUMN_GROUP], batch_rows):
                    writer = writer or pa.ipc.new_stream(spool, batch.schema)
                    writer.write_batch(batch)
                if writer is None:
                    return  # no rows
                writer.close()
                spool.seek(0)
                streams.append(pa.ipc.open_stream(spool))
            rows = 0
            for batch in _side_by_side(streams):
                rows += batch.num_rows
                yield batch
            if rows != self.declared_rows:
                raise ValidationFailed(
                    f"{self.name} is not a Parquet file we can read: it declares "
                    f"{self.declared_rows} rows but its columns hold {rows}."
                )
