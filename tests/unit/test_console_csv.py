"""The console's CSV reader (api/console/static/js/csv.js), run by Node, reads rows
as the service reads the file it is sent."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import pytest

from api.console import STATIC_DIR
from shared.tables.upload_sources import CsvSource

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None and not os.environ.get("CI"), reason="node is not installed"
)


def _console_rows(text: str) -> list[list[str]]:
    script = (
        f"import {{ parseCsv }} from {json.dumps(str(STATIC_DIR / 'js' / 'csv.js'))};"
        "let text = ''; process.stdin.on('data', (d) => (text += d));"
        "process.stdin.on('end', () => console.log(JSON.stringify(parseCsv(text))));"
    )
    done = subprocess.run(
        [NODE or "node", "--input-type=module", "-e", script],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout)


def _service_rows(text: str) -> int:
    source = CsvSource(io.BytesIO(text.encode()), "file")
    columns = source.plan(integers=set(), count_rows=lambda rows: None)
    return sum(batch.num_rows for batch in source.batches(columns))


@pytest.mark.parametrize(
    "text",
    [
        "width\n1.5\n\n3\n",  # a missing value in a file of one column
        "width\n1.5\n\n3\n\n",  # ... and another at the end
        "\n\nwidth\r\n1.5\r\n\r\n3",  # blank lines before the header are no rows
        "width,colour\n1.5,red\n\n3,blue\n",  # in a wider file a blank line is no row
    ],
)
def test_the_console_reads_as_many_rows_as_the_service(text):
    header, *rows = _console_rows(text)
    assert header in (["width"], ["width", "colour"])
    assert len(rows) == _service_rows(text)


def test_a_blank_line_in_a_one_column_file_is_a_missing_value():
    assert _console_rows("width\n1.5\n\n3\n") == [["width"], ["1.5"], [""], ["3"]]
