"""The rules of a job's metadata and of GET /jobs's metadata filters (shared.jobs.job_metadata)."""

from __future__ import annotations

import pytest

from shared.core.errors import ValidationFailed
from shared.jobs.job_metadata import (
    MAX_KEY_CHARS,
    MAX_PAIRS,
    MAX_VALUE_CHARS,
    check_metadata,
    merged,
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


def test_a_merge_patch_sets_replaces_and_removes_pairs():
    current = {"order": "A-17", "draft": "yes"}
    patch = {"order": "A-18", "shipped": "today", "draft": None, "absent": None}
    assert merged(current, patch) == {"order": "A-18", "shipped": "today"}
    assert current == {"order": "A-17", "draft": "yes"}  # not changed in place
    assert merged(current, {}) == current
    assert merged(None, {"run": "7"}) == {"run": "7"}
    assert merged(current, None) is None  # null removes every pair
    assert merged(current, {"order": None, "draft": None}) is None  # none left


def test_a_merge_patch_keeps_the_rules_for_the_labels_it_leaves():
    full = {f"k{i}": "v" for i in range(MAX_PAIRS)}
    with pytest.raises(ValidationFailed, match=f"{MAX_PAIRS + 1} pairs"):
        merged(full, {"one_more": "v"})
    # Replacing one pair of sixteen, or removing one to add another, stays within them.
    assert merged(full, {"k0": "w"})["k0"] == "w"
    assert "new" in merged(full, {"k0": None, "new": "v"})
    for bad in ({"a key": "v"}, {"k": "x" * (MAX_VALUE_CHARS + 1)}, {"k": 1}, {"k": "\x00"}):
        with pytest.raises(ValidationFailed):
            merged(None, bad)
    # A change may remove every pair and set as many anew, and no more.
    swap = {**dict.fromkeys(full), **{f"n{i}": "v" for i in range(MAX_PAIRS)}}
    assert len(merged(full, swap)) == MAX_PAIRS
    with pytest.raises(ValidationFailed, match=f"{2 * MAX_PAIRS + 1} keys"):
        merged(full, {**swap, "absent": None})
    for not_an_object in (["k", "v"], "k=v", 3):
        with pytest.raises(ValidationFailed, match="JSON object"):
            merged(full, not_an_object)
