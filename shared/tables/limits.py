"""Refuse at submit what the upstream's limits, or ours, would refuse after queueing.

Test sets need no row limit of the upstream's: the worker splits large ones
into chunks the upstream accepts. Every table, train or test, has our own
byte budget (MAX_DECODED_BYTES) for what it decodes to: a small, well
compressed file may describe a huge table. Uploads are checked while they
are read, so `at_least` marks a count that stopped at the limit. `limit` is
the upstream's (shared.upstream.account.upstream_limits(), once per request); None
when unknown, and then only our own budget applies.
"""

from __future__ import annotations

from typing import Any

from shared.core.config import get_settings
from shared.core.errors import LimitExceeded


def _refuse(
    what: str, value: int, name: str, limit: int, *, at_least: bool, whose: str = "TabPFN's"
) -> None:
    counted = "at least " if at_least else ""
    raise LimitExceeded(
        f"{what} is {counted}{value}, over {whose} limit of {limit} ({name}).",
        limit=name,
        limit_value=limit,
    )


def check_train_shape(limit: Any, rows: int, cols: int, *, at_least: bool = False) -> None:
    """Rows, columns and cells of a train set; `limit` from upstream_limits()."""
    if limit is None:
        return
    if rows > limit.train_set_max_rows:
        _refuse(
            "The number of training rows",
            rows,
            "train_set_max_rows",
            limit.train_set_max_rows,
            at_least=at_least,
        )
    if cols > limit.max_cols:
        _refuse("The number of columns", cols, "max_cols", limit.max_cols, at_least=False)
    if rows * cols > limit.train_set_max_upload_cells:
        _refuse(
            "The number of training cells (rows × columns)",
            rows * cols,
            "train_set_max_upload_cells",
            limit.train_set_max_upload_cells,
            at_least=at_least,
        )


def check_classes(limit: Any, n_classes: int, *, at_least: bool = False) -> None:
    if limit is not None and n_classes > limit.max_classes:
        _refuse(
            "The number of classes", n_classes, "max_classes", limit.max_classes, at_least=at_least
        )


def check_test_shape(limit: Any, cols: int) -> None:
    if limit is not None and cols > limit.max_cols:
        _refuse("The number of columns", cols, "max_cols", limit.max_cols, at_least=False)


def check_decoded_bytes(size: int, *, at_least: bool = False) -> None:
    """The table as stored and as the worker holds it (float64 numbers, text)."""
    budget = get_settings().max_decoded_bytes
    if size > budget:
        _refuse(
            "The decoded table's size in bytes",
            size,
            "max_decoded_bytes",
            budget,
            at_least=at_least,
            whose="this service's",
        )
