"""A job's metadata: the caller's own labels on a job (an order id, a pipeline run).

Key-value strings, given at submit, returned with the job, sent in its webhook
and usable as a filter of GET /jobs, so a pipeline maps a job or a webhook back
to its own records without keeping a table of job ids. The limits are OpenAI's
for the same feature (16 pairs, 64-character keys, 512-character values): small
enough to ride along with every job's end message. Keys are restricted to
letters, digits and `_ - .`, so `key:value` in a filter is never ambiguous.
"""

from __future__ import annotations

import re
from typing import Any

from shared.core.errors import ValidationFailed
from shared.tables.payloads import NUL, holds_nul

MAX_PAIRS = 16
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 512
_KEY = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_KEY_CHARS}}}")
RULES = (
    f"at most {MAX_PAIRS} pairs; keys of 1 to {MAX_KEY_CHARS} letters, digits, _, - or .; "
    f"values text of at most {MAX_VALUE_CHARS} characters"
)


def check_metadata(metadata: Any) -> dict[str, str] | None:
    """The metadata as stored (None for none, `{}` included), or a 422 naming the rule."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise ValidationFailed(
            f'metadata must be a JSON object of text, e.g. {{"order": "A-17"}}: {RULES}.'
        )
    if len(metadata) > MAX_PAIRS:
        raise ValidationFailed(f"metadata has {len(metadata)} pairs: {RULES}.")
    for key, value in metadata.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValidationFailed(f"metadata key {str(key)[:80]!r} is not allowed: {RULES}.")
        if not isinstance(value, str):
            raise ValidationFailed(
                f"metadata[{key!r}] must be text, not {type(value).__name__}: {RULES}."
            )
        if len(value) > MAX_VALUE_CHARS:
            raise ValidationFailed(f"metadata[{key!r}] has {len(value)} characters: {RULES}.")
        if NUL in value:
            raise holds_nul(f"metadata[{key!r}]")
    return metadata or None


def merged(current: dict[str, str] | None, patch: Any) -> dict[str, str] | None:
    """`current` changed by `patch` as a JSON Merge Patch (RFC 7396) changes an object:
    a key given text is set, a key given null is removed, a null patch removes every
    pair. The result is held to the same rules as a submit's, as a whole."""
    if patch is None:
        return None
    if not isinstance(patch, dict):
        raise ValidationFailed(
            'metadata must be a JSON object, e.g. {"order": "A-18", "stale": null} '
            "(text sets a key, null removes it), or null to remove every pair."
        )
    if len(patch) > 2 * MAX_PAIRS:  # enough to remove every pair and set as many anew
        raise ValidationFailed(
            f"The change names {len(patch)} keys; at most {2 * MAX_PAIRS} at once: {RULES}."
        )
    result = dict(current or {})
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return check_metadata(result)


def parse_filters(filters: list[str]) -> dict[str, str]:
    """GET /jobs's `metadata=key:value` filters as one object the job's must contain."""
    wanted: dict[str, str] = {}
    for item in filters:
        key, colon, value = item.partition(":")
        if not colon or not _KEY.fullmatch(key):
            raise ValidationFailed(
                f"metadata filter {item[:80]!r} is not key:value with a key of letters, "
                "digits, _, - or . (e.g. metadata=order:A-17)."
            )
        if key in wanted and wanted[key] != value:
            raise ValidationFailed(f"metadata filter names {key!r} twice with different values.")
        wanted[key] = value
    return wanted
