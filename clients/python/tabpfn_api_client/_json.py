"""Request bodies as JSON text (the standard library's encoder: no extra dependency)."""

from __future__ import annotations

import json
from typing import Any

from .errors import ValidationError


def dumps(body: dict[str, Any]) -> bytes:
    """JSON for a request; infinite numbers are refused here rather than by the service.
    numpy scalars and arrays (a search's grid hands out `np.int64`, `np.arange`) go as the
    plain values they hold, wherever they are: options, labels, any field."""
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":"), default=_plain).encode()
    except ValueError as exc:
        raise ValidationError(
            "The data holds an infinite number; replace it (NaN/None is sent as missing).",
            code="validation_error",
        ) from exc


def _plain(value: Any) -> Any:
    """A numpy value as Python's; numpy is not imported for it (its types are told apart
    by their module), so a client that sends no numpy never loads it."""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()  # a scalar's tolist() is its Python value
    raise ValidationError(
        f"A value of type {type(value).__name__} cannot be sent as JSON; use numbers, text, "
        "booleans, lists or objects.",
        code="validation_error",
    )
