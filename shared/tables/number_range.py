"""The numbers TabPFN can take: finite and within float32's range.

TabPFN computes in float32. A value past ±3.4e38 (1e308, or 1e400, which
every parser reads as infinity) would pass as a float64 and fail in the
upstream after queueing ("value too large for dtype float32"), so it is
refused at submit, with one code and one sentence whatever the format.
"""

from __future__ import annotations

from decimal import Decimal
from numbers import Number

import numpy as np

from shared.core.errors import NumberOutOfRange

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _shown(value: Number) -> str:
    try:
        return f"{value:g}"
    except OverflowError:  # an integer past any float (JSON allows 4300 digits)
        return f"{Decimal(value):.4g}"


def past_float32(value: object) -> bool:
    """Whether a cell (a number of any type, or anything else) is a number past float32's range."""
    return isinstance(value, Number) and abs(value) > FLOAT32_MAX


def out_of_range(where: str, row: int, value: Number) -> NumberOutOfRange:
    return NumberOutOfRange(
        f"{where}, row {row} is out of range ({_shown(value)}): numbers must be finite and within "
        f"±{FLOAT32_MAX:.4g}, the float32 range TabPFN computes in. Leave a cell empty "
        "(null) if it is missing.",
        row=row,
        max_abs=FLOAT32_MAX,
    )


def first_out_of_range(values: np.ndarray) -> int | None:
    """The index of the first value past float32's range (infinities included); NaN is fine."""
    with np.errstate(invalid="ignore"):
        bad = np.abs(values) > FLOAT32_MAX
    return int(np.argmax(bad)) if bad.any() else None


def check_numbers(values: np.ndarray, where: str, *, offset: int = 0) -> None:
    """Refuse the first number TabPFN could not take; `offset` is the row of values[0]."""
    index = first_out_of_range(values)
    if index is not None:
        raise out_of_range(where, offset + index, float(values[index]))
