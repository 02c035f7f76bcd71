"""Storing a job's data: its Parquet files streamed into Postgres with binary COPY.

psycopg2 sends a bytea parameter as hex text inside the SQL string, so a
16 MB payload costs the API about 125 MB of peak memory that way. COPY
reads the payload from its (spooled) file in small chunks instead, inside
the session's transaction, so a rollback undoes it like any insert.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from sqlalchemy.orm import Session

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_COPY = "COPY job_data (job_id, train_parquet, test_parquet, size_bytes) FROM STDIN (FORMAT binary)"
_CHUNK = 1 << 20


def _size(file: BinaryIO | None) -> int:
    if file is None:
        return 0
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(0)
    return size


class _CopyStream:
    """The one-row binary COPY stream, read on demand: header, fields, file contents."""

    def __init__(self, job_id: uuid.UUID, train: BinaryIO | None, test: BinaryIO | None) -> None:
        self._parts = self._generate(job_id, train, test)
        self._pending = b""

    @staticmethod
    def _generate(
        job_id: uuid.UUID, train: BinaryIO | None, test: BinaryIO | None
    ) -> Iterator[bytes]:
        sizes = [_size(train), _size(test)]
        yield _HEADER + struct.pack("!h", 4) + struct.pack("!i", 16) + job_id.bytes
        for file, size in zip((train, test), sizes, strict=True):
            if file is None:
                yield struct.pack("!i", -1)
                continue
            yield struct.pack("!i", size)
            while chunk := file.read(_CHUNK):
                yield chunk
        yield struct.pack("!iq", 8, sum(sizes)) + _TRAILER

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            self._pending = next(self._parts, b"")
            if not self._pending:
                return b""
        if size < 0:
            size = len(self._pending)
        chunk, self._pending = self._pending[:size], self._pending[size:]
        return chunk


def insert_job_data(
    *, session: Session, job_id: uuid.UUID, train: BinaryIO | None, test: BinaryIO | None
) -> None:
    """Insert the job_data row of a job already flushed in this session."""
    connection = session.connection().connection
    with connection.cursor() as cursor:
        cursor.copy_expert(_COPY, _CopyStream(job_id, train, test), size=_CHUNK)
