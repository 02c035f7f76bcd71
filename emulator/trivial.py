"""A stand-in model that costs almost no CPU (EMULATOR_MODEL=trivial), NOT TabPFN.

Benchmarks of the service must measure the service, not the emulator: the real
cloud computes elsewhere, while the random forest of standin.py burns the same
cores the service runs on. This model never decodes X: it reads the row and
column counts from the parquet footer, and only the train set's target column.

- classification: every row gets the majority class, and the class frequencies
  of the train set as probabilities (columns in sorted class order);
- regression: every row gets the mean, median, mode and quantiles of the train
  target, and its histogram for "full" output.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from emulator.standin import DEFAULT_QUANTILES, N_BARS, StandInError, parquet_shape

TRIVIAL_LABEL = "emulator-standin (trivial: class frequencies or target quantiles, not TabPFN)"


def read_target(data: bytes) -> list[Any]:
    """The first column of the y parquet file as Python values."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:
        raise StandInError(f"The uploaded file is not a readable parquet file: {exc}") from exc
    if table.num_columns != 1:
        raise StandInError("y must be a single column with one value per row of X.")
    return table.column(0).to_pylist()


class TrivialModel:
    label = TRIVIAL_LABEL
    n_estimators = 1

    def __init__(self, task: str) -> None:
        self.task = task

    def fit(self, n_rows: int, y: list[Any]) -> TrivialModel:
        if n_rows == 0:
            raise StandInError("The train set has no rows.")
        if len(y) != n_rows:
            raise StandInError("y must be a single column with one value per row of X.")
        if any(v is None or v != v for v in y):  # v != v: NaN
            raise StandInError("y contains missing values.")
        if self.task == "classification":
            counts = Counter(y)
            self.classes_ = np.array(sorted(counts))
            self._probabilities = [counts[c] / n_rows for c in self.classes_.tolist()]
            self._majority = self.classes_.tolist()[int(np.argmax(self._probabilities))]
        else:
            self._y = np.sort(np.asarray(y, dtype=float))
        return self

    def read_test(self, data: bytes) -> int:
        """The number of test rows: all this model needs to answer."""
        return parquet_shape(data)[0]

    def predict_classification(self, n_rows: int, output_type: str) -> list[Any]:
        if output_type == "probas":
            return [list(self._probabilities) for _ in range(n_rows)]
        if output_type == "preds":
            return [self._majority] * n_rows
        raise StandInError(f"Unknown classification output_type {output_type!r}.")

    def predict_regression(
        self, n_rows: int, output_type: str, quantiles: list[float] | None
    ) -> list[Any] | dict[str, Any]:
        qs = DEFAULT_QUANTILES if quantiles is None else quantiles
        if any(not 0.0 <= q <= 1.0 for q in qs):
            raise StandInError("quantiles must lie between 0 and 1.")
        y = self._y
        simple = {
            "mean": lambda: [float(y.mean())] * n_rows,
            "median": lambda: [float(np.median(y))] * n_rows,
            "mode": lambda: [self._mode()] * n_rows,
            "quantiles": lambda: [[float(v)] * n_rows for v in np.quantile(y, qs)],
        }
        if output_type in simple:
            return simple[output_type]()
        if output_type in ("main", "full"):
            main: dict[str, Any] = {name: make() for name, make in simple.items()}
            if output_type == "full":
                borders, logits = self._bars()
                main["borders"] = borders
                main["logits"] = [logits] * n_rows
            return main
        raise StandInError(f"Unknown regression output_type {output_type!r}.")

    def _mode(self) -> float:
        bins = max(1, min(10, len(np.unique(self._y))))
        counts, edges = np.histogram(self._y, bins=bins)
        top = int(np.argmax(counts))
        return float((edges[top] + edges[top + 1]) / 2)

    def _bars(self) -> tuple[list[float], list[float]]:
        low, high = float(self._y[0]), float(self._y[-1])
        span = max(high - low, 1e-6)
        borders = np.linspace(low - 0.1 * span, high + 0.1 * span, N_BARS + 1)
        counts = np.histogram(self._y, bins=borders)[0] + 0.01
        return borders.tolist(), np.log(counts / counts.sum()).tolist()
