"""ORM models. Every table is defined here so Alembic's autogenerate sees them all."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints make migrations reproducible and reviewable.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _labels_index(name: str) -> Index:
    """The index of a `metadata=key:value` filter (`labels @> {...}`), over only the
    rows that have labels: rows without any cost it nothing."""
    return Index(
        name,
        "labels",
        postgresql_using="gin",
        postgresql_ops={"labels": "jsonb_path_ops"},
        postgresql_where=text("labels IS NOT NULL"),
    )


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = _uuid_pk()
    created_at: Mapped[datetime] = _created_at()
    # Fernet ciphertexts: the TabPFN token is a credential that spends the
    # user's money; the webhook secret must be readable to sign deliveries.
    tabpfn_token_encrypted: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    webhook_secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # Scheduling (shared/jobs/scheduling): free slots go to the user served longest ago
    # (a new user counts as served at the epoch, so it goes first)...
    last_served_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        nullable=False,
        server_default=text("'1970-01-01 00:00:00+00'"),
        index=True,
    )
    # ...unless the user's TabPFN token has no upstream budget until this time.
    upstream_paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # HMAC of the token keyed from SECRET_KEY (shared.accounts.security.token_fingerprint):
    # setup with the same token finds this account. NULL for rows from before
    # it existed until the first setup miss or `rotate-secret` fills it.
    tabpfn_token_fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    # The public id embedded in the key itself, so lookup needs no hash scan.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    key_hash: Mapped[str] = mapped_column(String(100), nullable=False)
    # The owner's label for the key ("nightly-etl"), to tell their keys apart.
    name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FittedModel(Base):
    __tablename__ = "fitted_models"
    __table_args__ = (
        # GET /models?metadata=key:value
        _labels_index("ix_fitted_models_labels"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    fit_job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    task: Mapped[str] = mapped_column(String(20), nullable=False)
    # TabPFN options of the fit; predictions send the same configuration.
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    # The upstream's fitted_train_set_id: an id in the user's TabPFN account.
    upstream_model_id: Mapped[str] = mapped_column(String(64), nullable=False)
    columns: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    # The columns fitted as text: a test set sends them as text too (NULL: not recorded,
    # a model fitted before 0004).
    text_columns: Mapped[list[str] | None] = mapped_column(JSONB(none_as_null=True))
    # Classes in the user's label type, sorted as the upstream orders probabilities.
    classes: Mapped[list[Any] | None] = mapped_column(JSONB(none_as_null=True))
    n_rows: Mapped[int] = mapped_column(Integer, nullable=False)
    n_features: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = _created_at()
    # The caller's labels (the API's `metadata`): its fit job's as that job ended (a
    # trigger copies them into a model inserted without labels: migration 0008), then
    # changed by PATCH /models/{id}. NULL: none.
    labels: Mapped[dict[str, str] | None] = mapped_column(JSONB(none_as_null=True))


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_user_id_created_at", "user_id", "created_at"),
        # The scheduler's two questions, kept small by their predicates: each user's
        # oldest queued job, and how many jobs each user has running.
        Index(
            "ix_jobs_queued_user_id_created_at",
            "user_id",
            "created_at",
            postgresql_where=text("status = 'queued'"),
        ),
        Index("ix_jobs_running_user_id", "user_id", postgresql_where=text("status = 'running'")),
        # GET /jobs?metadata=key:value
        _labels_index("ix_jobs_labels"),
    )
    # INSERT ... RETURNING the server-set timestamps: the 202 needs created_at,
    # and reading the row back after the commit would cost a round trip per submit.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    type: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    stage: Mapped[str | None] = mapped_column(String(20))
    task: Mapped[str | None] = mapped_column(String(20))
    # For predict jobs the model it uses; for fit jobs the model it made.
    model_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("fitted_models.id", ondelete="SET NULL")
    )
    # Everything about the request that is not data: options, output, columns.
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    callback_url: Mapped[str | None] = mapped_column(Text)
    # The caller's key-value labels, the API's `metadata` (shared.jobs.job_metadata).
    # Named otherwise here: `metadata` is the declarative base's own attribute.
    labels: Mapped[dict[str, str] | None] = mapped_column(JSONB(none_as_null=True))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # The worker running the job touches this; a stale one means the worker is gone.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Which process runs (or last ran) the job (this_worker(): host, pid, start, pid ns).
    worker: Mapped[str | None] = mapped_column(String(255))
    # A retry waits out its backoff: no worker claims the job before this time.
    run_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Why run_after is set: retry_backoff, or upstream_rate_limit (not an attempt).
    wait_reason: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    upstream_timings: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class IdempotencyKey(Base):
    """The first job made with a client's Idempotency-Key, and a hash of its request."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    created_at: Mapped[datetime] = _created_at()


class JobData(Base):
    """A job's data, kept apart from its row so listing jobs never reads blobs.

    The retention sweep empties these columns and keeps the job's metadata.
    """

    __tablename__ = "job_data"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    # zstd-compressed Parquet: the train set holds the target as its last column.
    train_parquet: Mapped[bytes | None] = mapped_column(LargeBinary)
    test_parquet: Mapped[bytes | None] = mapped_column(LargeBinary)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # none_as_null: a deleted result is SQL NULL, not the JSON value null.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))


class WebhookDelivery(Base):
    """One event sent to a job's callback_url, with its retries.

    `event_id` is the `webhook-id` header: stable across retries and
    redeliveries, so receivers can drop duplicates.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = _uuid_pk()
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    event_id: Mapped[str] = mapped_column(String(64), nullable=False)
    event_type: Mapped[str] = mapped_column(String(32), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    # The JSON body, fixed when the event happens: retries send the same bytes.
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    # pending (to send or retry), succeeded, failed (gave up or 410 Gone)
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False, index=True
    )
    attempted_at: Mapped[datetime] = _created_at()
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    # Why it failed, in a sentence; null when the receiver answered 2xx.
    error: Mapped[str | None] = mapped_column(Text)


# Finished-job totals for /metrics (migration 0004_job_metrics_totals): a trigger
# logs each finished job's id in `jobs_finished_uncounted` (no model: rows only
# appended by it and deleted by `fold_finished_jobs()`), a fold adds those jobs
# here, and a scrape sums these few rows instead of reading every job (one row per
# key). Written by the database only.

jobs_finished_uncounted = Table(
    "jobs_finished_uncounted",
    Base.metadata,
    Column("job_id", UUID(as_uuid=True), nullable=False),
)


class JobOutcomeTotal(Base):
    """Finished jobs by type, final status and error code ('' without one)."""

    __tablename__ = "job_outcome_totals"

    type: Mapped[str] = mapped_column(String(20), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    error_code: Mapped[str] = mapped_column(String(50), primary_key=True)
    jobs: Mapped[int] = mapped_column(BigInteger, nullable=False)


class JobDurationTotal(Base):
    """Finished jobs' durations (queue_wait, run, upstream) by type and final status:
    how many fell in the bucket ending at `le` (not cumulative; +Inf is infinity)
    and their seconds in all."""

    __tablename__ = "job_duration_totals"

    metric: Mapped[str] = mapped_column(String(20), primary_key=True)
    type: Mapped[str] = mapped_column(String(20), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    le: Mapped[float] = mapped_column(Float, primary_key=True)
    jobs: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)
