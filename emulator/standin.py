"""The model behind the emulator's predictions: a small random forest, NOT TabPFN.

It exists so that clients get plausible, deterministic answers offline. It copes
with what TabPFN users send: text columns, missing values and tiny train sets.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

STANDIN_LABEL = "emulator-standin (scikit-learn RandomForest, not TabPFN)"
N_TREES = 50
DEFAULT_QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
# Bars of the histogram that stands in for TabPFN's bar distribution in "full" output.
N_BARS = 100


class StandInError(ValueError):
    """The data cannot be used; the message is meant for the API caller."""


def read_parquet(data: bytes) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise StandInError(f"The uploaded file is not a readable parquet file: {exc}") from exc


def parquet_shape(data: bytes) -> tuple[int, int]:
    """Rows and columns from the parquet footer, without decoding any data."""
    try:
        metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    except Exception as exc:
        raise StandInError(f"The uploaded file is not a readable parquet file: {exc}") from exc
    # pandas writes its index as an extra column only when it is not a RangeIndex;
    # the schema's pandas metadata names such columns, which are not features.
    index_columns = _pandas_index_columns(metadata)
    return metadata.num_rows, metadata.num_columns - index_columns


def _pandas_index_columns(metadata: pq.FileMetaData) -> int:
    raw = (metadata.metadata or {}).get(b"pandas")
    if not raw:
        return 0
    index = json.loads(raw).get("index_columns", [])
    # A RangeIndex is stored as a dict description, not as a column.
    return sum(1 for entry in index if isinstance(entry, str))


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) or pd.api.types.is_datetime64_any_dtype(series)


def _as_numeric(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        seconds = series.astype("int64").astype(float) / 1e9
        return seconds.where(series.notna(), np.nan)
    return pd.to_numeric(series, errors="coerce").astype(float)


def _as_text(series: pd.Series) -> pd.Series:
    # Mixed cells (ints next to strings) break the encoder's sorting, so compare as text.
    present = series.notna()
    out = pd.Series(np.nan, index=series.index, dtype=object)
    out[present] = series[present].astype(str)
    return out


@dataclass
class _Columns:
    names: list[str]
    text: list[str]


class StandInModel:
    label = STANDIN_LABEL
    n_estimators = N_TREES

    def __init__(self, task: str, random_state: int | None = 0) -> None:
        self.task = task
        self.random_state = 0 if random_state is None else random_state

    def fit(
        self, X: pd.DataFrame, y: pd.DataFrame, categorical_indices: list[int] | None = None
    ) -> StandInModel:
        if X.shape[0] == 0:
            raise StandInError("The train set has no rows.")
        if y.shape[1] != 1 or y.shape[0] != X.shape[0]:
            raise StandInError("y must be a single column with one value per row of X.")
        target = y.iloc[:, 0]
        if target.isna().any():
            raise StandInError("y contains missing values.")
        X = X.copy()
        # Parquet turns int column names into strings; do the same for frames built here.
        X.columns = [str(c) for c in X.columns]
        forced = {X.columns[i] for i in categorical_indices or [] if 0 <= i < X.shape[1]}
        text = [c for c in X.columns if c in forced or not _is_numeric(X[c])]
        self._columns = _Columns(names=list(X.columns), text=text)
        self._pipeline = self._build_pipeline()
        if self.task == "classification":
            values = target.to_numpy()
            self._pipeline.fit(self._prepare(X), values)
            self.classes_ = self._pipeline.classes_
        else:
            self._pipeline.fit(self._prepare(X), _as_numeric(target).to_numpy())
            self._y_min = float(_as_numeric(target).min())
            self._y_max = float(_as_numeric(target).max())
        return self

    def _build_pipeline(self) -> Pipeline:
        numeric = [c for c in self._columns.names if c not in self._columns.text]
        encode = ColumnTransformer(
            [
                (
                    "text",
                    OrdinalEncoder(
                        handle_unknown="use_encoded_value",
                        unknown_value=-1,
                        encoded_missing_value=-1,
                    ),
                    self._columns.text,
                ),
                (
                    "numeric",
                    SimpleImputer(strategy="median", keep_empty_features=True),
                    numeric,
                ),
            ]
        )
        forest_cls = (
            RandomForestClassifier if self.task == "classification" else RandomForestRegressor
        )
        forest = forest_cls(n_estimators=N_TREES, random_state=self.random_state, n_jobs=1)
        return Pipeline([("encode", encode), ("forest", forest)])

    def _prepare(self, X: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=X.index)
        for c in self._columns.names:
            out[c] = _as_text(X[c]) if c in self._columns.text else _as_numeric(X[c])
        return out

    def align(self, X: pd.DataFrame) -> pd.DataFrame:
        """Match test columns to train columns by name, or by position as a fallback."""
        X = X.copy()
        X.columns = [str(c) for c in X.columns]
        names = self._columns.names
        if set(names) <= set(X.columns):
            return X[names]
        if X.shape[1] == len(names):
            X.columns = names
            return X
        raise StandInError(
            f"The test set has {X.shape[1]} columns {list(X.columns)[:10]}, but the model was "
            f"fitted on {len(names)} columns {names[:10]}."
        )

    def read_test(self, data: bytes) -> pd.DataFrame:
        return read_parquet(data)

    def predict_classification(self, X: pd.DataFrame, output_type: str) -> list[Any]:
        Xp = self._prepare(self.align(X))
        if output_type == "probas":
            return self._pipeline.predict_proba(Xp).tolist()
        if output_type == "preds":
            return self._pipeline.predict(Xp).tolist()
        raise StandInError(f"Unknown classification output_type {output_type!r}.")

    def predict_regression(
        self, X: pd.DataFrame, output_type: str, quantiles: list[float] | None
    ) -> list[Any] | dict[str, Any]:
        Xp = self._prepare(self.align(X))
        encoded = self._pipeline[:-1].transform(Xp)
        forest = self._pipeline[-1]
        # One row per tree: the spread across trees stands in for TabPFN's predictive
        # distribution, so quantiles, median and mode all come from it.
        per_tree = np.stack([tree.predict(np.asarray(encoded)) for tree in forest.estimators_])
        qs = DEFAULT_QUANTILES if quantiles is None else quantiles
        if any(not 0.0 <= q <= 1.0 for q in qs):
            raise StandInError("quantiles must lie between 0 and 1.")

        def quantile_rows() -> list[list[float]]:
            return [np.quantile(per_tree, q, axis=0).tolist() for q in qs]

        simple = {
            "mean": lambda: per_tree.mean(axis=0).tolist(),
            "median": lambda: np.median(per_tree, axis=0).tolist(),
            "mode": lambda: _mode(per_tree).tolist(),
            "quantiles": quantile_rows,
        }
        if output_type in simple:
            return simple[output_type]()
        if output_type in ("main", "full"):
            main = {name: make() for name, make in simple.items()}
            if output_type == "full":
                borders, logits = self._bars(per_tree)
                main["borders"] = borders.tolist()
                main["logits"] = logits.tolist()
            return main
        raise StandInError(f"Unknown regression output_type {output_type!r}.")

    def _bars(self, per_tree: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        span = max(self._y_max - self._y_min, 1e-6)
        borders = np.linspace(self._y_min - 0.1 * span, self._y_max + 0.1 * span, N_BARS + 1)
        counts = np.stack(
            [np.histogram(per_tree[:, i], bins=borders)[0] for i in range(per_tree.shape[1])]
        )
        # Smoothing keeps every logit finite: JSON has no -inf.
        probs = (counts + 0.01) / (counts + 0.01).sum(axis=1, keepdims=True)
        return borders, np.log(probs)


def _mode(per_tree: np.ndarray) -> np.ndarray:
    modes = np.empty(per_tree.shape[1])
    for i in range(per_tree.shape[1]):
        values = per_tree[:, i]
        bins = max(1, min(10, len(np.unique(values))))
        counts, edges = np.histogram(values, bins=bins)
        top = int(np.argmax(counts))
        modes[i] = (edges[top] + edges[top + 1]) / 2
    return modes
