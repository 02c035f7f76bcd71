"""scikit-learn estimators that fit and predict through the TabPFN API.

They behave like scikit-learn's own: the constructor only stores its
parameters (so `clone`, `get_params`/`set_params`, `GridSearchCV` and
`Pipeline` work), `fit` returns the estimator, fitted attributes end in `_`.
Each `fit` is a fit job on the service and each `predict` a predict job; the
client is built on first use from `api_url`/`api_key` or the environment
(`API_URL`, `TABPFN_API_KEY`). Needs the `[sklearn]` extra.

The API key: prefer TABPFN_API_KEY to `api_key=`. A key given as a parameter shows
as '***' wherever scikit-learn prints parameters (the estimator, a search or a
pipeline holding it, a notebook's HTML), but it is a parameter: `get_params()`
returns it (a tool that logs parameters as text records it) and a pickle holds
it (joblib's worker processes need it to fit in a parallel search).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .client import MAX_LONG_POLL_S, Client, Job
from .errors import JobTimeoutError

T = TypeVar("T")

# Constructor parameters that are TabPFN options; None means "the service's default".
_COMMON_OPTIONS = (
    "n_estimators",
    "softmax_temperature",
    "average_before_softmax",
    "categorical_features_indices",
    "ignore_pretraining_limits",
    "inference_precision",
    "fit_mode",
    "random_state",
)


class _RemoteTabPFN(BaseEstimator):
    _task: str
    _option_names: tuple[str, ...] = _COMMON_OPTIONS

    def _options(self) -> dict[str, Any]:
        options = {n: getattr(self, n) for n in self._option_names if getattr(self, n) is not None}
        if self.options:
            options.update(self.options)
        seed = options.get("random_state")
        if isinstance(seed, np.random.RandomState):  # as scikit-learn draws a seed from one
            options["random_state"] = int(seed.randint(np.iinfo(np.int32).max))
        return options  # numpy values (a search's grid) go as plain JSON (_json.dumps)

    def _client(self) -> Client:
        # Built lazily and kept out of get_params: clones and pickles make their own.
        signature = (self.api_url, self.api_key, self.request_timeout)
        client = self.__dict__.get("_client_instance")
        if client is None or self.__dict__.get("_client_signature") != signature:
            client = Client(self.api_url, self.api_key, timeout=self.request_timeout)
            self.__dict__["_client_instance"] = client
            self.__dict__["_client_signature"] = signature
        return client

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_client_instance", None)
        state.pop("_client_signature", None)
        return state

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        # The key is a parameter (clone needs it) that scikit-learn prints wherever it
        # shows parameters: the estimator, a search or pipeline holding it, a notebook's
        # HTML. All of them print a parameter's repr, which this key's masks.
        params = super().get_params(deep=deep)
        key = params.get("api_key")
        if isinstance(key, str) and not isinstance(key, _MaskedKey):
            params["api_key"] = _MaskedKey(key)
        return params

    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.non_deterministic = True
        return tags

    def _check_X(self, X: Any, *, reset: bool) -> Any:
        if not isinstance(X, pd.DataFrame | np.ndarray):
            X = np.asarray(X, dtype=object) if _is_ragged_or_mixed(X) else np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"Expected 2-D input, got an array of shape {np.shape(X)}.")
        if reset:
            self.n_features_in_ = X.shape[1]
            if isinstance(X, pd.DataFrame) and all(isinstance(c, str) for c in X.columns):
                self.feature_names_in_ = np.asarray(X.columns, dtype=object)
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return X

    def _columns(self, X: Any) -> list[str] | None:
        # A DataFrame fitted with string column names is matched by name; anything
        # else by position (x0, x1, ...), so a DataFrame fit and an array predict line up.
        names = getattr(self, "feature_names_in_", None)
        if names is not None and isinstance(X, pd.DataFrame):
            return None
        if names is not None:
            return [str(n) for n in names]
        return [f"x{j}" for j in range(self.n_features_in_)]

    def _fit(self, X: Any, y: Any) -> None:
        # A refit that fails leaves the estimator unfitted, not holding the old model
        # beside the new data's classes and features.
        for fitted in ("model_id_", "fit_job_id_"):
            self.__dict__.pop(fitted, None)
        X = self._check_X(X, reset=True)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}.")
        client = self._client()
        started = time.monotonic()
        job = client.fit(
            X,
            y,
            task=self._task,
            options=self._options(),
            columns=self._columns(X),
            wait=self._submit_wait(),
        )
        _finish_or_cancel(job, lambda: job.wait(self._time_left(started)))
        self.model_id_ = job.model_id
        self.fit_job_id_ = job.id

    def _predict(self, X: Any, **kwargs: Any) -> dict[str, Any]:
        check_is_fitted(self, "model_id_")
        X = self._check_X(X, reset=False)
        started = time.monotonic()
        job = self._client().predict(
            self.model_id_, X, columns=self._columns(X), wait=self._submit_wait(), **kwargs
        )
        return _finish_or_cancel(job, lambda: job.result(self._time_left(started)))

    def _submit_wait(self) -> float:
        """How long a submit waits for its job itself: a job that ends in time comes
        back with its result in one request (within `job_timeout`)."""
        if self.job_timeout is None:
            return MAX_LONG_POLL_S
        return max(0.0, min(self.job_timeout, MAX_LONG_POLL_S))

    def _time_left(self, started: float) -> float | None:
        """What is left of `job_timeout` after the submit's own wait."""
        if self.job_timeout is None:
            return None
        return max(0.001, self.job_timeout - (time.monotonic() - started))


def _finish_or_cancel(job: Job, finish: Callable[[], T]) -> T:
    """`finish()`; a job still running at `job_timeout` is canceled, so it stops spending
    the TabPFN account's quota on a result nobody waits for."""
    try:
        return finish()
    except JobTimeoutError:
        with contextlib.suppress(Exception):  # the timeout is the error to report
            job.cancel()
        raise


class _MaskedKey(str):
    """An API key that is itself to every use but `repr`, which shows `'***'`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class RemoteTabPFNClassifier(ClassifierMixin, _RemoteTabPFN):
    """A TabPFN classifier that runs on the TabPFN API service.

    `api_url`, `api_key`: the service (default `API_URL`, `TABPFN_API_KEY`).
    TabPFN options (`n_estimators`, `softmax_temperature`, `random_state`, ...)
    default to None, the service's default; `options` adds any other.
    `job_timeout` bounds each wait for a job (seconds, None for no bound);
    `request_timeout` each HTTP request.
    """

    _task = "classification"
    _option_names = (*_COMMON_OPTIONS, "balance_probabilities")

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        n_estimators: int | None = None,
        softmax_temperature: float | None = None,
        balance_probabilities: bool | None = None,
        average_before_softmax: bool | None = None,
        categorical_features_indices: list[int] | None = None,
        ignore_pretraining_limits: bool | None = None,
        inference_precision: str | None = None,
        fit_mode: str | None = None,
        random_state: int | None = None,
        options: dict[str, Any] | None = None,
        job_timeout: float | None = 900.0,
        request_timeout: float = 30.0,
    ) -> None:
        self.api_url = api_url
        self.api_key = api_key
        self.n_estimators = n_estimators
        self.softmax_temperature = softmax_temperature
        self.balance_probabilities = balance_probabilities
        self.average_before_softmax = average_before_softmax
        self.categorical_features_indices = categorical_features_indices
        self.ignore_pretraining_limits = ignore_pretraining_limits
        self.inference_precision = inference_precision
        self.fit_mode = fit_mode
        self.random_state = random_state
        self.options = options
        self.job_timeout = job_timeout
        self.request_timeout = request_timeout

    def fit(self, X: Any, y: Any) -> RemoteTabPFNClassifier:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        self._fit(X, y)
        return self

    def _as_classes(self, values: list[Any]) -> np.ndarray:
        lookup = {_plain(c): c for c in self.classes_}
        return np.asarray([lookup.get(v, v) for v in values], dtype=self.classes_.dtype)

    def predict(self, X: Any) -> np.ndarray:
        return self._as_classes(self._predict(X, output="labels")["predictions"])

    def predict_proba(self, X: Any) -> np.ndarray:
        result = self._predict(X, output="probabilities")
        probabilities = np.asarray(result["probabilities"], dtype=float)
        # Columns in the order of classes_, whatever order the service used.
        index = {_plain(c): i for i, c in enumerate(self.classes_)}
        out = np.zeros((probabilities.shape[0], len(self.classes_)))
        for j, cls in enumerate(result["classes"]):
            out[:, index[cls]] = probabilities[:, j]
        return out


class RemoteTabPFNRegressor(RegressorMixin, _RemoteTabPFN):
    """A TabPFN regressor that runs on the TabPFN API service (parameters as the classifier's).

    `predict(X)` is the mean; `predict(X, output_type="median")`, or
    `output_type="quantiles", quantiles=[0.1, 0.9]` for one array per quantile.
    """

    _task = "regression"

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        n_estimators: int | None = None,
        softmax_temperature: float | None = None,
        average_before_softmax: bool | None = None,
        categorical_features_indices: list[int] | None = None,
        ignore_pretraining_limits: bool | None = None,
        inference_precision: str | None = None,
        fit_mode: str | None = None,
        random_state: int | None = None,
        options: dict[str, Any] | None = None,
        job_timeout: float | None = 900.0,
        request_timeout: float = 30.0,
    ) -> None:
        self.api_url = api_url
        self.api_key = api_key
        self.n_estimators = n_estimators
        self.softmax_temperature = softmax_temperature
        self.average_before_softmax = average_before_softmax
        self.categorical_features_indices = categorical_features_indices
        self.ignore_pretraining_limits = ignore_pretraining_limits
        self.inference_precision = inference_precision
        self.fit_mode = fit_mode
        self.random_state = random_state
        self.options = options
        self.job_timeout = job_timeout
        self.request_timeout = request_timeout

    def fit(self, X: Any, y: Any) -> RemoteTabPFNRegressor:
        self._fit(X, np.asarray(y, dtype=float).ravel())
        return self

    def predict(
        self, X: Any, output_type: str = "mean", quantiles: list[float] | None = None
    ) -> np.ndarray | list[np.ndarray]:
        if output_type == "quantiles":
            asked = [float(q) for q in quantiles or [0.1, 0.5, 0.9]]
            result = self._predict(X, output="quantiles", quantiles=asked)
            # One array per quantile asked for, in the order asked, as tabpfn-client
            # gives them: the result's object is keyed by each quantile's text, in the
            # order the service's JSONB keeps keys (by length first: "0.5" before
            # "0.05"), so its values() put [0.05, 0.5, 0.95] as [0.5, 0.05, 0.95].
            return [np.asarray(result["quantiles"][str(q)], dtype=float) for q in asked]
        return np.asarray(self._predict(X, output=output_type)["predictions"], dtype=float)


def _plain(value: Any) -> Any:
    """A class label as JSON gives it back (numpy scalars as Python ones)."""
    return value.item() if isinstance(value, np.generic) else value


def _is_ragged_or_mixed(X: Any) -> bool:
    try:
        return np.asarray(X).dtype.kind not in "biuf"
    except ValueError:
        return True
