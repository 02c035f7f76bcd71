"""Job states, types and stages: the vocabulary clients rely on."""

from __future__ import annotations

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELED = "canceled"

FINISHED = frozenset({SUCCEEDED, FAILED, CANCELED})

FIT = "fit"
PREDICT = "predict"
FIT_PREDICT = "fit_predict"

CLASSIFICATION = "classification"
REGRESSION = "regression"

# Stages a poller sees while a job runs.
STAGE_FITTING = "fitting"
STAGE_PREDICTING = "predicting"
