"""An Idempotency-Key's request digest: whatever the request holds, a digest or a 422."""

from __future__ import annotations

import pytest

from shared.core.errors import ValidationFailed
from shared.jobs.idempotency import fingerprint


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_past_orjson_takes_the_json_modules_digest():
    assert fingerprint("fit", {"options": {"a": _nested(300)}}) == fingerprint(
        "fit", {"options": {"a": _nested(300)}}
    )


def test_nesting_no_json_encoder_writes_is_a_validation_error_not_a_500():
    # A form's options are parsed by json.loads and hashed before they are checked:
    # a depth it read with little stack to spare broke json.dumps (RecursionError).
    with pytest.raises(ValidationFailed, match="too deeply"):
        fingerprint("fit:upload", {"options": {"a": _nested(5000)}})
