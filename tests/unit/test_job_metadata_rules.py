"""The rules of a job's metadata and of GET /jobs's metadata filters (shared.jobs.job_metadata)."""

from __future__ import annotations

import pytest

from shared.core.errors import ValidationFailed
from shared.jobs.job_metadata import (
    MAX_KEY_CHARS,
    MAX_PAIRS,
    MAX_VALUE_CHARS,
    check_metadata,
    parse_filters,
)


def test_metadata_at_its_limits_is_kept_as_given():
    most = {
        f"k.{i}-_{'x' * (MAX_KEY_CHARS - 6)}"[:MAX_KEY_CHARS]: "é" * MAX_VALUE_CHARS
        for i in range(MAX_PAIRS)
    }
    assert len(most) == MAX_PAIRS
    assert check_metadata(most) == most
    assert check_metadata({"empty": ""}) == {"empty": ""}


def test_none_and_an_empty_object_are_stored_as_none():
    assert check_metadata(None) is None
    assert check_metadata({}) is None


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(MAX_PAIRS + 1)},
        {"k" * (MAX_KEY_CHARS + 1): "v"},
        {"a:b": "v"},
        {"a[b]": "v"},
        {"ключ": "v"},
        {"k": "v" * (MAX_VALUE_CHARS + 1)},
        {"k": 1},
        {"k": None},
        {"k": ["v"]},
        {"k": "a\x00b"},
        "order=A-17",
        ["order"],
    ],
)
def test_metadata_outside_the_rules_is_refused(metadata):
    with pytest.raises(ValidationFailed):
        check_metadata(metadata)


def test_filters_split_at_the_first_colon_and_must_agree():
    assert parse_filters([]) == {}
    assert parse_filters(["order:A-17", "url:http://x", "empty:"]) == {
        "order": "A-17",
        "url": "http://x",
        "empty": "",
    }
    assert parse_filters(["order:A", "order:A"]) == {"order": "A"}
    for bad in (["order"], [":A"], ["a b:c"], ["order:A", "order:B"]):
        with pytest.raises(ValidationFailed):
            parse_filters(bad)
