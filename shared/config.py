"""The one Settings object that the API, the worker and the CLI all read.

Values come from the environment, then from `.env`. Production commands call
`require()` so that a missing `DATABASE_URL` or `SECRET_KEY` stops them with one
clear line instead of a fallback nobody asked for.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

TABPFN_CLOUD_URL = "https://api.priorlabs.ai"


class MissingSettingError(RuntimeError):
    """A setting a production command cannot start without."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = None
    redis_url: str | None = None
    # The Celery queue jobs travel on; deployments sharing one Redis use different names.
    celery_queue: str = "celery"
    # Comma-separated: the first key encrypts, every key decrypts (rotation).
    secret_key: str | None = Field(default=None, repr=False)

    tabpfn_api_url: str = TABPFN_CLOUD_URL
    # Seconds for one upstream call made while the API waits (token checks, limits).
    upstream_timeout_s: float = 10.0
    # How long the upstream's published limits are trusted before asking again.
    upstream_settings_ttl_s: float = 3600.0
    # Seconds for one upstream call a worker makes (fit, predict); fits can be slow.
    upstream_call_timeout_s: float = 900.0
    # Transient upstream faults are retried after base * 2^(attempt-1) seconds,
    # capped, with jitter; MAX_ATTEMPTS counts every run of a job.
    retry_backoff_s: float = 2.0
    retry_backoff_max_s: float = 120.0

    log_level: str = "INFO"
    # text (human-readable lines) or json (one JSON object per line, for log shippers).
    log_format: str = "text"
    flower_basic_auth: str | None = Field(default=None, repr=False)
    webhook_allow_private_targets: bool = False
    emulator_tokens: str = "demo-token"

    max_request_bytes: int = 50 * 1024 * 1024
    max_upload_bytes: int = 500 * 1024 * 1024
    # The most an uploaded table may decode to (float64 numbers and text, as stored
    # and as a worker holds it), checked from Parquet metadata before decoding and
    # counted as any upload is read: a 1 MiB file can describe 30 million rows.
    max_decoded_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)

    # Requests per minute one API key may make (0: no limit).
    rate_limit_per_minute: int = 600
    # Invalid API keys per minute one client address may send before it is refused.
    bad_auth_per_minute: int = 30
    # How long a successful API key verification is trusted before bcrypt runs again.
    api_key_cache_s: float = 60.0
    # Long-poll cap for GET /jobs/{id}?wait=S.
    max_wait_s: float = 60.0

    # The sweeper repairs what crashes leave behind (see docs/reliability.md).
    sweeper_interval_s: float = 30.0
    # A queued job not picked up this long after its last change is sent again.
    queued_timeout_s: float = 120.0
    # A job runs at most this long; past it the run is stopped (Celery time limit).
    running_timeout_s: float = 3600.0
    # A running job touches heartbeat_at this often...
    heartbeat_interval_s: float = 10.0
    # ...and one silent this long has lost its worker: it is run again.
    lease_timeout_s: float = 60.0
    max_attempts: int = 5
    # Payloads and results of finished jobs are deleted after this; metadata stays.
    retention_s: float = 7 * 24 * 3600.0
    retention_interval_s: float = 3600.0
    # How long an Idempotency-Key is remembered.
    idempotency_ttl_s: float = 24 * 3600.0

    # Webhooks: seconds to wait for a receiver, and the delays before each retry
    # (comma-separated seconds, jittered); after the last retry the delivery fails.
    webhook_timeout_s: float = 15.0
    webhook_retry_schedule_s: str = "5,30,120,600,1800,7200"

    # The address clients reach this API at; webhook events link to it.
    public_url: str = "http://127.0.0.1:8000"

    def webhook_retry_delays(self) -> list[float]:
        return [float(d) for d in self.webhook_retry_schedule_s.split(",") if d.strip()]

    def secret_keys(self) -> list[str]:
        return [k.strip() for k in (self.secret_key or "").split(",") if k.strip()]

    def require(self, *names: str) -> Settings:
        """Raise MissingSettingError naming the first unset variable of `names`."""
        for name in names:
            if not getattr(self, name.lower(), None):
                raise MissingSettingError(
                    f"{name.upper()} is not set: export it or put it in .env (see .env.example)."
                )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
