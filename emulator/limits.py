"""The limits the emulator advertises in get_settings and enforces on uploads."""

from __future__ import annotations

from tabpfn_client.api_models import AsyncSettings, GetSettingsResponse, ModelLimit, ModelVersion

from emulator.config import EmulatorConfig
from emulator.standin import StandInError


def model_limit(config: EmulatorConfig) -> ModelLimit:
    """The limits of every model version; rows follow EMULATOR_MAX_ROWS (tests shrink it)."""
    return ModelLimit(
        train_set_max_rows=config.max_rows,
        train_set_max_cells=5_000_000,
        train_set_max_upload_cells=5_000_000,
        test_set_max_rows=config.max_rows,
        max_classes=10,
        max_cols=500,
        test_set_max_rows_w_full_regression_output=1_000,
        predict_row_pairs_budget=config.max_rows * config.max_rows,
        test_set_max_cells=5_000_000,
    )


DEFAULT_MODEL_VERSION = ModelVersion.V2_5
DATASET_MAX_SIZE_BYTES = 100 * 1024 * 1024
# Matches the client's own default, so AUTO mode behaves as against the cloud.
ASYNC_ABOVE_BYTES = 50 * 1024 * 1024
POLL_TIMEOUT_S = 600.0


def settings_response(config: EmulatorConfig) -> GetSettingsResponse:
    limit = model_limit(config)
    return GetSettingsResponse(
        default_model_version=DEFAULT_MODEL_VERSION,
        max_model_limit=limit,
        model_limits={version: limit for version in ModelVersion},
        dataset_max_size_bytes=DATASET_MAX_SIZE_BYTES,
        async_settings=AsyncSettings(
            use_above_trainset_size_bytes=0 if config.force_async else ASYNC_ABOVE_BYTES,
            poll_timeout_secs=POLL_TIMEOUT_S,
        ),
    )


def check_train_set(rows: int, cols: int, n_classes: int | None, limit: ModelLimit) -> None:
    """Refuse a train set over the limits; `n_classes` is None for regression."""
    if rows > limit.train_set_max_rows:
        raise StandInError(
            f"The number of train rows ({rows}) exceeds the maximum of {limit.train_set_max_rows}."
        )
    if cols > limit.max_cols:
        raise StandInError(
            f"The number of train columns ({cols}) exceeds the maximum of {limit.max_cols}."
        )
    if n_classes is not None and n_classes > limit.max_classes:
        raise StandInError(
            f"Number of classes {n_classes} exceeds the maximal number of "
            f"{limit.max_classes} classes."
        )


def check_test_set(rows: int, cols: int, output_type: str, limit: ModelLimit) -> None:
    if rows > limit.test_set_max_rows:
        raise StandInError(
            f"The number of test rows ({rows}) exceeds the maximum of {limit.test_set_max_rows}."
        )
    if cols > limit.max_cols:
        raise StandInError(
            f"The number of test columns ({cols}) exceeds the maximum of {limit.max_cols}."
        )
    full_rows = limit.test_set_max_rows_w_full_regression_output
    if output_type == "full" and rows > full_rows:
        raise StandInError(
            f"The number of test rows ({rows}) exceeds the maximum of {full_rows} "
            "for full regression output."
        )
