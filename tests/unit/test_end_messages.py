"""What a long-poll may answer from an end's message alone (shared.jobs.events)."""

from __future__ import annotations

from shared.jobs.events import FINAL_FIELDS, FINAL_KEYS, answers_alone


def test_an_end_with_every_field_answers_alone():
    final = dict.fromkeys(FINAL_KEYS)
    assert answers_alone(final)
    assert answers_alone({**final, "added_by_a_newer_release": 1})


def test_an_end_missing_any_field_is_read_from_the_job():
    # Labels too long to send, or any field a worker of an older release did not send.
    for missing in FINAL_KEYS:
        final = {key: None for key in FINAL_KEYS if key != missing}
        assert not answers_alone(final), missing
    assert "labels" in FINAL_KEYS and len(FINAL_KEYS) == len(FINAL_FIELDS)
