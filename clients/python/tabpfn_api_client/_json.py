"""Request bodies as JSON text (the standard library's encoder: no extra dependency)."""

from __future__ import annotations

import json
from typing import Any

from .errors import ValidationError


def dumps(body: dict[str, Any]) -> bytes:
    """JSON for a request; infinite numbers are refused here rather than by the service."""
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:
        raise ValidationError(
            "The data holds an infinite number; replace it (NaN/None is sent as missing).",
            code="validation_error",
        ) from exc
