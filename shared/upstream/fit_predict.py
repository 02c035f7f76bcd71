"""Fit and predict through `tabpfn-client`, with one user's token per call.

`tabpfn-client` keeps one access token in process-global state. A worker runs
jobs of many users, so it never sets that token: every call carries the job
owner's token in `ClientOptions.headers`, and signed upload URLs (which the
client PUTs without our headers) are credentials of their own.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

from shared.core.config import get_settings
from shared.jobs import states as js
from shared.upstream import pacing
from shared.upstream.account import upstream_limits
from shared.upstream.client import load_client

_SYSTEMS = ["preprocessing", "text"]  # what TabPFNClassifier/Regressor send by default


@dataclass(frozen=True)
class FitOutcome:
    upstream_model_id: str
    timings: dict[str, Any] | None


@dataclass(frozen=True)
class Prediction:
    values: Any
    timings: dict[str, Any] | None
    metadata: dict[str, Any]


class TabPFNUpstream:
    """One job's door to the upstream: its owner's token, its deadline, its token's budget."""

    def __init__(
        self,
        token: str,
        *,
        deadline_s: float | None = None,
        fingerprint: str = "",
        steps_begun: set[str] | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        self._client = load_client()
        # Raises when the run is no longer wanted (canceled, past its deadline, taken
        # over): called between a test set's chunks and while a budget wait sleeps,
        # which went on sending chunks and holding the slot for a job nobody wanted.
        self._check = check or (lambda: None)
        # "fit" and "predict" once the step's first request is about to leave: the
        # run gives back the reserved calls of steps it never began (pacing.refund_unsent).
        self.steps_begun = steps_begun if steps_begun is not None else set()
        timeout = get_settings().upstream_call_timeout_s
        if deadline_s is not None:
            # No call may outlive the job's deadline by much: the thread is then freed.
            timeout = max(1.0, min(timeout, deadline_s))
        self._deadline = time.monotonic() + (deadline_s if deadline_s is not None else timeout)
        self._fingerprint = fingerprint
        self._options = self._client.models.ClientOptions(
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def _options_now(self) -> Any:
        """The options of a call that starts now: no longer a timeout than the job has
        left (fixed once at the start, a later chunk's call ran up to 15 min past it)."""
        left = self._deadline - time.monotonic()
        if left >= self._options.timeout:
            return self._options
        return dataclasses.replace(self._options, timeout=max(1.0, left))

    def pace(self, calls: dict[str, int]) -> None:
        """Reserve budget for calls beyond what the claim reserved, waiting for it if need be.

        Rare (a refit, a test set split in chunks): the wait holds this job's slot,
        which is cheaper than handing back a job that is half done.
        """
        if not self._fingerprint:
            return
        while (until := pacing.reserve(self._fingerprint, calls)) is not None:
            wait = until.timestamp() - time.time()
            if time.monotonic() + wait > self._deadline:
                raise TimeoutError("no upstream budget before the job's deadline")
            waited_until = time.monotonic() + max(0.05, wait)
            while (left := waited_until - time.monotonic()) > 0:
                self._check()
                time.sleep(min(left, 0.5))

    def _clean(self, X: pd.DataFrame) -> pd.DataFrame:
        # The estimators clean text this way before upload; do as they do. The
        # cleaning only ever changes object columns that are not numbers, so a
        # table of numeric columns alone is sent as it is, without the copy and
        # the per-column number check: 0.25 ms for 500 x 10, 24 ms and a 40 MB
        # copy for 50,000 x 100, on every fit and every predict.
        if all(is_numeric_dtype(dtype) for dtype in X.dtypes):
            return X
        from tabpfn_client.estimator import _clean_text_features

        return _clean_text_features(X)

    def fit(self, *, task: str, X: pd.DataFrame, y: pd.Series, options: dict) -> FitOutcome:
        models = self._client.api_models
        if task == js.CLASSIFICATION:
            config = models.ClassifierFitTaskConfig(
                tabpfn_config=models.ClassifierTabPFNConfig(**options)
            )
        else:
            config = models.RegressorFitTaskConfig(
                tabpfn_config=models.RegressorTabPFNConfig(**options)
            )
        upstream_limits()  # cached; when stale, refreshed here, before the client asks
        self.steps_begun.add("fit")
        result = self._client.ServiceClient.fit_with_result(
            self._clean(X),
            y.to_numpy(),
            task_config=config,
            tabpfn_systems=_SYSTEMS,
            client_options=self._options_now(),
        )
        return FitOutcome(str(result.fitted_train_set_id), result.timings)

    def predict(
        self,
        *,
        task: str,
        upstream_model_id: str,
        X: pd.DataFrame,
        output_type: str,
        options: dict,
        quantiles: list[float] | None = None,
    ) -> Prediction:
        models = self._client.api_models
        if task == js.CLASSIFICATION:
            config = models.ClassifierConfig(
                tabpfn_config=models.ClassifierTabPFNConfig(**options),
                predict_params=models.ClassifierPredictParams(output_type=output_type),
            )
        else:
            config = models.RegressorConfig(
                tabpfn_config=models.RegressorTabPFNConfig(**options),
                predict_params=models.RegressorPredictParams(
                    output_type=output_type, quantiles=quantiles
                ),
            )
        parts = []
        # Cleaned whole, then split: the cleaning decides per column whether it is text
        # (a column whose cells all parse as numbers is left alone), so a chunk whose
        # cells of a text column happened to be " 5" and "7 " alone kept their spaces
        # and met the model as categories it never saw, unlike the same rows in a
        # whole table or in any other chunk.
        for index, chunk in enumerate(_chunks(self._clean(X))):
            if index > 0:  # the claim reserved the first chunk's calls
                self._check()
                self.pace(pacing.calls_for(js.PREDICT))
            self.steps_begun.add("predict")
            parts.append(
                self._client.ServiceClient.predict(
                    upstream_model_id,
                    chunk,
                    task_config=config,
                    client_options=self._options_now(),
                )
            )
        # Quantile output is one row of values per quantile: join chunks along rows.
        axis = 1 if output_type == "quantiles" else 0
        values = np.concatenate([np.asarray(p.y_pred) for p in parts], axis=axis)
        return Prediction(values, _sum_timings([p.timings for p in parts]), parts[-1].metadata)


def _chunks(X: pd.DataFrame) -> list[pd.DataFrame]:
    """Split a test set into pieces within the upstream's per-request limits."""
    limit = upstream_limits()
    if limit is None:
        return [X]
    rows = max(1, min(limit.test_set_max_rows, limit.test_set_max_cells // max(1, X.shape[1])))
    return [X.iloc[start : start + rows] for start in range(0, len(X), rows)] or [X]


def _sum_timings(timings: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    known = [t for t in timings if t]
    if not known:
        return None
    total: dict[str, Any] = {}
    for timing in known:
        for key, value in timing.items():
            if isinstance(value, int | float):
                total[key] = total.get(key, 0) + value
    return total


def as_list(values: Any) -> list:
    """Predictions as plain JSON-ready lists; NaN (not valid JSON) becomes null."""
    return _nan_to_none(np.asarray(values).tolist())


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
