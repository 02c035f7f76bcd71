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
from emulator.standin import StandInError, StandInModel, parquet_shape, read_parquet
from emulator.trivial import TrivialModel, read_target


def train(
    model: FittedModel,
    x_bytes: bytes,
    y_bytes: bytes,
    tabpfn_config: ClassifierTabPFNConfig | RegressorTabPFNConfig | None,
    limit: ModelLimit,
    standin_kind: str = "forest",
) -> None:
    """Fit the stand-in (EMULATOR_MODEL) and record the outcome on `model`; never raises."""
    try:
        started = time.perf_counter()
        if standin_kind == "trivial":
            standin, loaded = _fit_trivial(model, x_bytes, y_bytes, limit)
        else:
            standin, loaded = _fit_forest(model, x_bytes, y_bytes, tabpfn_config, limit)
        fitted = time.perf_counter()
    except StandInError as exc:
        model.finish(error=str(exc))
        return
    except Exception as exc:  # a failed fit must surface as status=failed, not a 500
        model.finish(error=f"Fit failed: {type(exc).__name__}: {exc}")
        return
    model.finish(standin=standin, transform_s=loaded - started, fit_s=fitted - loaded)


def _fit_forest(
    model: FittedModel,
    x_bytes: bytes,
    y_bytes: bytes,
    cfg: ClassifierTabPFNConfig | RegressorTabPFNConfig | None,
    limit: ModelLimit,
) -> tuple[StandInModel, float]:
    X, y = read_parquet(x_bytes), read_parquet(y_bytes)
    is_classifier = model.task == "classification" and y.shape[1] >= 1
    n_classes = y.iloc[:, 0].nunique() if is_classifier else None
    check_train_set(X.shape[0], X.shape[1], n_classes, limit)
    model.train_shape = X.shape
    loaded = time.perf_counter()
    standin = StandInModel(model.task, random_state=cfg.random_state if cfg else None)
    standin.fit(X, y, categorical_indices=cfg.categorical_features_indices if cfg else None)
    return standin, loaded


def _fit_trivial(
    model: FittedModel, x_bytes: bytes, y_bytes: bytes, limit: ModelLimit
) -> tuple[TrivialModel, float]:
    rows, cols = parquet_shape(x_bytes)
    y = read_target(y_bytes)
    is_classifier = model.task == "classification"
    n_classes = len({v for v in y if v is not None}) if is_classifier else None
    check_train_set(rows, cols, n_classes, limit)
    model.train_shape = (rows, cols)
    loaded = time.perf_counter()
    return TrivialModel(model.task).fit(rows, y), loaded


def train_in_background(
    model: FittedModel,
    x_bytes: bytes,
    y_bytes: bytes,
    tabpfn_config: ClassifierTabPFNConfig | RegressorTabPFNConfig | None,
    limit: ModelLimit,
    standin_kind: str = "forest",
) -> None:
    threading.Thread(
        target=train,
        args=(model, x_bytes, y_bytes, tabpfn_config, limit, standin_kind),
        daemon=True,
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
    standin: StandInModel | TrivialModel,
    x_bytes: bytes,
    task_config: ClassifierConfig | RegressorConfig,
    limit: ModelLimit,
) -> PredictResponse:
    params = task_config.predict_params
    started = time.perf_counter()
    rows, cols = parquet_shape(x_bytes)
    X = standin.read_test(x_bytes)
    loaded = time.perf_counter()
    metadata_fields: dict[str, Any] = {
        "test_set_num_rows": rows,
        "test_set_num_cols": cols,
        "n_estimators": standin.n_estimators,
        "billing_model_version": "emulator",
        "execution_mode": "standard",
        "cache_outcome": "not_requested",
        "package_version": standin.label,
    }
    if isinstance(task_config, ClassifierConfig):
        output_type = str(params.output_type.value) if params and params.output_type else "preds"
        check_test_set(rows, cols, output_type, limit)
        prediction: Any = standin.predict_classification(X, output_type)
        metadata: ClassifierMetadata | RegressorMetadata = ClassifierMetadata(
            **metadata_fields,
            tabpfn_config=task_config.tabpfn_config or ClassifierTabPFNConfig(),
            classes=standin.classes_.tolist(),
        )
    else:
        output_type = str(params.output_type.value) if params and params.output_type else "mean"
        check_test_set(rows, cols, output_type, limit)
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
