"""Fit and predict work: turn uploaded parquet bytes into stand-in models and answers."""

from __future__ import annotations

import threading
import time
from typing import Any

from tabpfn_client.api_models import (
    ClassifierConfig,
    ClassifierMetadata,
    ClassifierTabPFNConfig,
    FitStatus,
    FitTimings,
    ModelLimit,
    PredictResponse,
    PredictTimings,
    RegressorConfig,
    RegressorMetadata,
    RegressorTabPFNConfig,
)

from emulator.accounts import FittedModel
from emulator.limits import check_test_set, check_train_set
from emulator.standin import N_TREES, STANDIN_LABEL, StandInError, StandInModel, read_parquet


def train(
    model: FittedModel,
    x_bytes: bytes,
    y_bytes: bytes,
    tabpfn_config: ClassifierTabPFNConfig | RegressorTabPFNConfig | None,
    limit: ModelLimit,
) -> None:
    """Fit the stand-in and record the outcome on `model`; never raises."""
    cfg = tabpfn_config
    try:
        started = time.perf_counter()
        X, y = read_parquet(x_bytes), read_parquet(y_bytes)
        check_train_set(X, y, model.task, limit)
        loaded = time.perf_counter()
        standin = StandInModel(model.task, random_state=cfg.random_state if cfg else None)
        standin.fit(X, y, categorical_indices=cfg.categorical_features_indices if cfg else None)
        fitted = time.perf_counter()
    except StandInError as exc:
        model.finish(error=str(exc))
        return
    except Exception as exc:  # a failed fit must surface as status=failed, not a 500
        model.finish(error=f"Fit failed: {type(exc).__name__}: {exc}")
        return
    model.finish(standin=standin, transform_s=loaded - started, fit_s=fitted - loaded)


def train_in_background(
    model: FittedModel,
    x_bytes: bytes,
    y_bytes: bytes,
    tabpfn_config: ClassifierTabPFNConfig | RegressorTabPFNConfig | None,
    limit: ModelLimit,
) -> None:
    threading.Thread(
        target=train, args=(model, x_bytes, y_bytes, tabpfn_config, limit), daemon=True
    ).start()


def fit_status(model: FittedModel, now: float) -> FitStatus:
    if not model.is_ready(now):
        return FitStatus.PENDING
    return FitStatus.FAILED if model.error else FitStatus.COMPLETED


def fit_timings(model: FittedModel, now: float) -> FitTimings:
    if not model.is_ready(now):
        return FitTimings(elapsed_s=round(now - model.submitted_at, 6))
    finished = max(model.finished_at or now, model.ready_at)
    elapsed = finished - model.submitted_at
    work = (model.train_set_transform_s or 0.0) + (model.fit_s or 0.0)
    return FitTimings(
        elapsed_s=round(elapsed, 6),
        queue_wait_s=round(max(elapsed - work, 0.0), 6),
        train_set_transform_s=_round(model.train_set_transform_s),
        fit_s=_round(model.fit_s),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def predict(
    standin: StandInModel,
    x_bytes: bytes,
    task_config: ClassifierConfig | RegressorConfig,
    limit: ModelLimit,
) -> PredictResponse:
    params = task_config.predict_params
    started = time.perf_counter()
    X = read_parquet(x_bytes)
    loaded = time.perf_counter()
    metadata_fields: dict[str, Any] = {
        "test_set_num_rows": X.shape[0],
        "test_set_num_cols": X.shape[1],
        "n_estimators": N_TREES,
        "billing_model_version": "emulator",
        "execution_mode": "standard",
        "cache_outcome": "not_requested",
        "package_version": STANDIN_LABEL,
    }
    if isinstance(task_config, ClassifierConfig):
        output_type = str(params.output_type.value) if params and params.output_type else "preds"
        check_test_set(X, output_type, limit)
        prediction: Any = standin.predict_classification(X, output_type)
        metadata: ClassifierMetadata | RegressorMetadata = ClassifierMetadata(
            **metadata_fields,
            tabpfn_config=task_config.tabpfn_config or ClassifierTabPFNConfig(),
            classes=standin.classes_.tolist(),
        )
    else:
        output_type = str(params.output_type.value) if params and params.output_type else "mean"
        check_test_set(X, output_type, limit)
        quantiles = params.quantiles if params else None
        prediction = standin.predict_regression(X, output_type, quantiles)
        metadata = RegressorMetadata(
            **metadata_fields,
            tabpfn_config=task_config.tabpfn_config or RegressorTabPFNConfig(),
        )
    predicted = time.perf_counter()
    return PredictResponse(
        prediction=prediction,
        metadata=metadata,
        timings=PredictTimings(
            test_set_transform_queue_wait_s=0.0,
            test_set_transform_s=round(loaded - started, 6),
            predict_queue_wait_s=0.0,
            predict_s=round(predicted - loaded, 6),
        ),
    )
