"""Deterministic classification tables: the same seed gives the same data in every process.

Every repetition uses a seed of its own, so the upstream never sees a table
twice: tabpfn-client deduplicates uploads by hash per account (409, upload
skipped), and both sides must do the same upstream work every time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

CLASSES = np.array(["setosa", "versicolor", "virginica"])
# The shape of every job in sections 1-3 and 5-10: 500 x 10 train rows, 100 test rows.
SMALL = {"rows": 500, "features": 10, "test_rows": 100}


@dataclass(frozen=True)
class Table:
    X: pd.DataFrame
    y: np.ndarray
    X_test: pd.DataFrame


def make_table(seed: int, *, rows: int, features: int, test_rows: int) -> Table:
    rng = np.random.default_rng(seed)
    columns = [f"f{j}" for j in range(features)]
    # Four decimals: what a real CSV holds, and floats that survive JSON exactly.
    X = np.round(rng.normal(size=(rows + test_rows, features)), 4)
    weights = rng.normal(size=features)
    score = X @ weights + rng.normal(scale=0.5, size=len(X))
    y = CLASSES[np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))]
    frame = pd.DataFrame(X, columns=columns)
    return Table(
        X=frame.iloc[:rows].reset_index(drop=True),
        y=y[:rows],
        X_test=frame.iloc[rows:].reset_index(drop=True),
    )


def fit_body(table: Table) -> dict:
    """The JSON body of POST /jobs/fit (rows with column names)."""
    return {
        "task": "classification",
        "train": {
            "X": table.X.to_numpy().tolist(),
            "y": table.y.tolist(),
            "columns": list(table.X.columns),
        },
    }


def fit_predict_body(table: Table) -> dict:
    """The JSON body of POST /jobs/fit-predict: the fit's, a test set and the output."""
    return {
        **fit_body(table),
        "test": {"X": table.X_test.to_numpy().tolist(), "columns": list(table.X.columns)},
        "output": "probabilities",
    }


def train_frame(table: Table, target: str = "target") -> pd.DataFrame:
    return table.X.assign(**{target: table.y})


def to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def to_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()
