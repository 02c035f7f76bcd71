"""Refuse at submit what the upstream's limits would refuse after queueing.

Test sets need no row limit here: the worker splits large ones into chunks
the upstream accepts.
"""

from __future__ import annotations

import pandas as pd

from shared.errors import LimitExceeded
from shared.upstream import upstream_limits


def _refuse(what: str, value: int, name: str, limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"{what} is {value}, over TabPFN's limit of {limit} ({name}).",
        limit=name,
        limit_value=limit,
    )


def check_train_limits(X: pd.DataFrame, *, n_classes: int | None) -> None:
    limit = upstream_limits()
    if limit is None:
        return
    rows, cols = X.shape
    if rows > limit.train_set_max_rows:
        raise _refuse(
            "The number of training rows", rows, "train_set_max_rows", limit.train_set_max_rows
        )
    if cols > limit.max_cols:
        raise _refuse("The number of columns", cols, "max_cols", limit.max_cols)
    if rows * cols > limit.train_set_max_upload_cells:
        raise _refuse(
            "The number of training cells (rows × columns)",
            rows * cols,
            "train_set_max_upload_cells",
            limit.train_set_max_upload_cells,
        )
    if n_classes is not None and n_classes > limit.max_classes:
        raise _refuse("The number of classes", n_classes, "max_classes", limit.max_classes)


def check_test_limits(X: pd.DataFrame) -> None:
    limit = upstream_limits()
    if limit is not None and X.shape[1] > limit.max_cols:
        raise _refuse("The number of columns", X.shape[1], "max_cols", limit.max_cols)
