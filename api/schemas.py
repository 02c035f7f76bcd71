"""Request and response shapes of the HTTP API (the contract in DESIGN.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints

Task = Literal["classification", "regression"]
JobType = Literal["fit", "predict", "fit_predict"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
Output = Literal["labels", "probabilities", "mean", "median", "quantiles"]
# Cells are checked column by column in shared.tables.payloads (numbers, text, booleans, null).
Rows = list[list[Any]] | list[dict[str, Any]] | dict[str, list[Any]]
# A job's labels; their limits are checked in shared.jobs.job_metadata, which the
# uploads' `metadata` field (JSON text) goes through too.
JobMetadata = Annotated[
    dict[str, str] | None,
    Field(
        description="Your own labels for the job (an order id, a pipeline run), returned "
        "with it, sent in its webhook and usable as a filter of GET /jobs: at most 16 "
        "pairs; keys of 1 to 64 letters, digits, _, - or .; values text of at most 512 "
        "characters.",
        examples=[{"order": "A-17", "pipeline": "nightly"}],
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SetupResponse(BaseModel):
    api_key: str
    key_id: str
    user_id: uuid.UUID
    webhook_secret: str
    # "existing": the token already had an account here; this is a new key for
    # it (older keys keep working), and its models and jobs are all there.
    account: Literal["new", "existing"]


class TokenRequest(_Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"tabpfn_token": "demo-token"}]}
    )

    # Printable ASCII without spaces: a token travels in an HTTP header.
    tabpfn_token: str = Field(min_length=1, max_length=4096, pattern=r"^[!-~]+$")


SetupRequest = TokenRequest


KeyName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]


class NewKeyRequest(_Strict):
    # Its example is the route's (`Body(examples=...)`): the body is optional there.
    name: KeyName | None = Field(
        default=None, description="A label for the key, to tell your keys apart (1-100 characters)."
    )


class NewKeyResponse(BaseModel):
    api_key: str
    key_id: str
    name: str | None = None


class ApiKeyOut(BaseModel):
    id: str
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class MeOut(BaseModel):
    user_id: uuid.UUID
    created_at: datetime
    key_id: str = Field(description="The id of the API key this request used.")
    active_keys: int


class TrainData(_Strict):
    X: Rows = Field(
        description="Rows (lists), records (objects), or columns (an object of equal-length "
        "lists, by column name); null for a missing value."
    )
    y: list[Any] = Field(description="One target per row: class labels or numbers.")
    columns: list[str] | None = Field(default=None, description="Column names for rows.")


class TestData(_Strict):
    X: Rows
    columns: list[str] | None = None


class FitRequest(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "task": "classification",
                    "train": {
                        "X": [[5.1, "red"], [4.9, None], [6.2, "blue"], [5.9, "blue"]],
                        "y": ["a", "a", "b", "b"],
                        "columns": ["width", "colour"],
                    },
                }
            ]
        },
    )

    task: Task
    train: TrainData
    options: dict[str, Any] = Field(default_factory=dict, description="TabPFN estimator options.")
    callback_url: AnyHttpUrl | None = None
    metadata: JobMetadata = None


class PredictRequest(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model_id": "2f1d6a3e-8c4b-4f7e-9a51-0c2d3e4f5a6b",
                    "X": [{"width": 5.0, "colour": "red"}, {"width": 6.1, "colour": None}],
                    "output": "probabilities",
                }
            ]
        },
    )

    model_id: uuid.UUID
    X: Rows
    columns: list[str] | None = None
    output: Output | None = Field(
        default=None, description="Default: labels (classification) or mean (regression)."
    )
    quantiles: list[float] | None = None
    callback_url: AnyHttpUrl | None = None
    metadata: JobMetadata = None


class FitPredictRequest(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "task": "regression",
                    "train": {"X": [[1.0, "a"], [2.0, "b"], [3.0, "a"]], "y": [1.5, 2.5, 3.4]},
                    "test": {"X": [[2.5, "b"]]},
                    "output": "quantiles",
                    "quantiles": [0.1, 0.5, 0.9],
                }
            ]
        },
    )

    task: Task
    train: TrainData
    test: TestData
    options: dict[str, Any] = Field(default_factory=dict)
    output: Output | None = None
    quantiles: list[float] | None = None
    callback_url: AnyHttpUrl | None = None
    metadata: JobMetadata = None


class JobError(BaseModel):
    code: str
    message: str


class JobLinks(BaseModel):
    self: str
    result: str


class JobWaiting(BaseModel):
    reason: Literal["retry_backoff", "upstream_rate_limit", "fair_share", "capacity"] = Field(
        description="retry_backoff: a transient upstream fault, retried at `until`; "
        "upstream_rate_limit: the TabPFN token's rate window is full until `until`; "
        "fair_share: you already run MAX_RUNNING_PER_USER jobs; "
        "capacity: waiting for a free worker slot."
    )
    until: datetime | None = Field(description="When the wait ends, when known.")


class JobOut(BaseModel):
    id: uuid.UUID
    type: JobType
    status: JobStatus
    stage: str | None
    task: Task | None
    model_id: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    error: JobError | None
    upstream_timings: dict[str, Any] | None
    metadata: dict[str, str] | None = Field(
        description="Your labels: as given at submit, or as changed since by PATCH; null if none."
    )
    waiting: JobWaiting | None = Field(
        default=None, description="Why a queued job has not started yet; null otherwise."
    )
    links: JobLinks


class WaitedJobOut(JobOut):
    """A submit's answer with `?wait=S` when its job ended within S seconds."""

    result: dict[str, Any] | None = Field(
        default=None,
        description="The job's result, as GET /jobs/{id}/result sends it; "
        "only when the job succeeded.",
    )


# The request body of the PATCH routes under its own media type too (RFC 7396),
# which FastAPI reads as JSON.
MERGE_PATCH_BODY = {
    "requestBody": {
        "content": {
            "application/merge-patch+json": {
                "schema": {"$ref": "#/components/schemas/LabelsUpdate"}
            }
        }
    }
}


class LabelsUpdate(_Strict):
    """A change to a job's or a model's labels, as a JSON Merge Patch (RFC 7396)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"metadata": {"status": "shipped", "draft": None}}]},
    )
    metadata: dict[str, str | None] | None = Field(
        default=None,
        description="Pairs to set (text) or remove (null); null removes every pair; "
        "leave it out to change nothing. The labels that result keep the submit's "
        "limits: at most 16 pairs; keys of 1 to 64 letters, digits, _, - or .; values "
        "text of at most 512 characters.",
    )


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = Field(
        description="Pass as `before` for the next page; null on the last page."
    )


class ModelOut(BaseModel):
    id: uuid.UUID
    task: Task
    columns: list[str]
    classes: list[Any] | None
    options: dict[str, Any]
    n_rows: int
    n_features: int
    fit_job_id: uuid.UUID
    created_at: datetime
    metadata: dict[str, str] | None = Field(
        validation_alias="labels",
        description="Your labels: its fit job's as that job ended, or as changed since by "
        "PATCH; null if none.",
    )


class ErrorOut(BaseModel):
    detail: str
    code: str


class WebhookAttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None = Field(description="The receiver's answer; null if none came.")
    latency_ms: int
    error: str | None


class WebhookDeliveryOut(BaseModel):
    id: uuid.UUID
    webhook_id: str = Field(description="The webhook-id header: the same on every retry.")
    event_type: str
    url: str
    status: Literal["pending", "succeeded", "failed"]
    created_at: datetime
    completed_at: datetime | None
    next_attempt_at: datetime | None
    attempts: list[WebhookAttemptOut]


class WebhookSecretOut(BaseModel):
    webhook_secret: str
