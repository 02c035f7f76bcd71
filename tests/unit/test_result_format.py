"""Which form GET /jobs/{id}/result answers in (`_result_format` in
api/routers/jobs.py): ?format= first, else the Accept header, else JSON."""

from __future__ import annotations

import pytest

from api.routers.jobs import _result_format


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "json"),
        ("", "json"),
        ("*/*", "json"),
        ("text/html", "json"),
        ("application/json", "json"),
        ("text/csv", "csv"),
        ("TEXT/CSV", "csv"),
        ("application/vnd.apache.parquet", "parquet"),
        ("application/x-parquet", "parquet"),
        # The highest quality wins; on a tie, the first listed.
        ("text/csv;q=0.5, application/vnd.apache.parquet", "parquet"),
        ("application/json;q=0.9, text/csv;q=0.8", "json"),
        ("text/csv, application/json", "csv"),
        ("text/html, text/csv;q=0.1", "csv"),
        ("text/csv;q=0", "json"),  # q=0: not acceptable
        # A quality that is not a number drops its entry, not the header.
        ("text/csv;q=high, application/x-parquet;q=0.2", "parquet"),
        ("text/csv;q=high", "json"),
    ],
)
def test_the_accept_header_picks_the_preferred_table_type(accept, expected):
    assert _result_format(None, accept) == expected


@pytest.mark.parametrize("requested", ["json", "csv", "parquet"])
def test_format_in_the_query_overrides_accept(requested):
    assert _result_format(requested, "application/x-parquet, text/csv") == requested
