"""The one Settings object that the API, the worker and the CLI all read.

Values come from the environment, then from `.env`. Production commands call
`require()` so that a missing `DATABASE_URL` or `SECRET_KEY` stops them with one
clear line instead of a fallback nobody asked for.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.core.connection_urls import normalize_database_url, normalize_redis_url

TABPFN_CLOUD_URL = "https://api.priorlabs.ai"


class MissingSettingError(RuntimeError):
    """A setting a production command cannot start without (or one with a bad value)."""


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
    # Each fetch also fills tabpfn-client's own cache of them, which lasts an hour.
    upstream_settings_ttl_s: float = 3600.0
    # Seconds for one upstream call a worker makes (fit, predict); fits can be slow.
    upstream_call_timeout_s: float = 900.0
    # Seconds an idle connection to the upstream is kept for reuse; below the
    # upstream's own idle timeout (shared/upstream/client.py).
    upstream_keepalive_s: float = Field(default=4.0, gt=0)
    # Transient upstream faults are retried after base * 2^(attempt-1) seconds,
    # capped, with jitter; MAX_ATTEMPTS counts every run of a job.
    retry_backoff_s: float = 2.0
    retry_backoff_max_s: float = 120.0

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # text (human-readable lines) or json (one JSON object per line, for log shippers).
    log_format: Literal["text", "json"] = "text"
    flower_basic_auth: str | None = Field(default=None, repr=False)
    webhook_allow_private_targets: bool = False
    emulator_tokens: str = "demo-token"

    max_request_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    max_upload_bytes: int = 500 * 1024 * 1024
    # The most an uploaded table may decode to (float64 numbers and text, as stored
    # and as a worker holds it), checked from Parquet metadata before decoding and
    # counted as any upload is read: a 1 MiB file can describe 30 million rows.
    max_decoded_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)

    # Requests per minute one API key may make (0: no limit).
    rate_limit_per_minute: int = 600
    # Invalid API keys per minute one client address may send before it is refused.
    bad_auth_per_minute: int = 30
    # The proxies whose X-Forwarded-For (and -Proto) names the client: addresses or
    # networks, comma-separated, or *. Behind a proxy on another address (a container
    # of its own), every request came from the proxy's address, and one client that
    # sent bad keys braked every client behind it.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    # GET /metrics answers only `Authorization: Bearer <this>` when set (Prometheus:
    # `authorization: {credentials: …}`); unset, anyone who reaches the route.
    metrics_token: str | None = None
    # How long a successful API key verification is trusted before bcrypt runs again.
    api_key_cache_s: float = 60.0
    # The cap on every ?wait=S: the job and result long-polls, and a submit that waits.
    max_wait_s: float = 60.0

    # The sweeper repairs what crashes leave behind (see docs/reliability.md).
    sweeper_interval_s: float = Field(default=30.0, gt=0)
    # A queued job not picked up this long after its last change is sent again.
    queued_timeout_s: float = 120.0
    # A job runs at most this long; past it the run is stopped (Celery time limit).
    running_timeout_s: float = 3600.0
    # A running job touches heartbeat_at this often...
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    # ...and one silent this long has lost its worker: it is run again.
    lease_timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=5, gt=0)

    # API processes `tabpfn-api api` serves with (uvicorn workers on one port). One
    # process runs Python on one core at a time: a wave of submits (many clients'
    # jobs ending together) queues behind it. docker-compose runs 2 (docs/benchmarks.md).
    api_processes: int = Field(default=1, gt=0)
    # Seconds the API keeps an idle keep-alive connection open. uvicorn's own 5 s
    # equals the idle time of httpx's pool and is below Go's (90 s) and AWS load
    # balancers' (60 s): a request sent as the server closes the connection fails
    # with a reset (docs/operations.md). Above the client's idle time, the client
    # closes first. Behind a load balancer, keep it above the balancer's idle timeout.
    api_keepalive_s: float = Field(default=100.0, gt=0)
    # SIGTERM: the API stops taking connections and gives requests in progress this
    # long to end, then closes the rest. Without a bound, an open event stream
    # (GET /jobs/{id}/events lasts as long as its job) held the process until the
    # orchestrator's SIGKILL. Keep it below that grace period (docker-compose.yml).
    api_drain_s: float = Field(default=10.0, ge=0)

    # Worker nodes are built for waiting: a job is almost all upstream wait, so a
    # node holds this many jobs in flight on threads (see docs/scheduling.md)...
    worker_concurrency: int = Field(default=64, gt=0)
    # ...shared by this many processes forked from one warm image (worker/node.py):
    # one process runs Python on one core at a time. Unset: two, or one where the
    # node may use a single core (at 64 in flight on 2 cores, two reach 0.85× the
    # direct client against 0.70× for one: docs/benchmarks.md).
    worker_processes: int | None = Field(default=None, gt=0)
    # SIGTERM: in-flight jobs may finish for this long; the rest are handed back.
    worker_drain_s: float = Field(default=30.0, ge=0)
    # Database connections per process: jobs hold one only while they read or
    # write, never while they wait on the upstream.
    db_pool_size: int = Field(default=10, gt=0)
    db_max_overflow: int = Field(default=20, ge=0)
    # Redis connections a process opens for pacing, rate limits and job-change
    # messages (Celery's broker connections are its own).
    redis_max_connections: int = Field(default=16, gt=0)

    # Scheduling: free slots go round-robin between users with queued work, and no
    # user runs more than this many jobs at once, so one backlog cannot fill a fleet.
    max_running_per_user: int = Field(default=16, gt=0)
    # Each TabPFN token is paced to the cloud's published per-user limits (fixed
    # windows of a minute and an hour), across every worker node.
    upstream_fits_per_minute: int = Field(default=60, gt=0)
    upstream_fits_per_hour: int = Field(default=1000, gt=0)
    upstream_predictions_per_minute: int = Field(default=60, gt=0)
    upstream_predictions_per_hour: int = Field(default=1500, gt=0)
    upstream_uploads_per_minute: int = Field(default=120, gt=0)
    upstream_uploads_per_hour: int = Field(default=3000, gt=0)
    # Multiplies the window lengths (1: a minute is 60 s); tests shorten them.
    upstream_rate_window_scale: float = Field(default=1.0, gt=0)
    # Payloads and results of finished jobs are deleted after this; metadata stays.
    retention_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    retention_interval_s: float = Field(default=3600.0, gt=0)
    # Where `tabpfn-api beat` keeps the sweeps' last run times, so that a restarted beat
    # runs each when it is due. Unset: a file in a directory of the process's own
    # under the temp dir, deleted when beat exits, so two beats on one host (two
    # deployments, dev stacks, test runs) never share one; a restarted beat then
    # counts each interval from its start.
    beat_schedule_file: str | None = None
    # How long an Idempotency-Key is remembered. Unset: 24 hours, or RETENTION_S if
    # that is shorter; set, at most RETENTION_S (checked below).
    idempotency_ttl_s: float | None = Field(default=None, gt=0)

    # Webhooks: seconds an attempt may take in all (DNS lookup, connect, send, and the
    # answer's status line and headers; its body is never read), and the delays before each
    # retry (comma-separated seconds, jittered); after the last retry the delivery fails.
    webhook_timeout_s: float = Field(default=15.0, gt=0)
    webhook_retry_schedule_s: str = "5,30,120,600,1800,7200"
    # The most of a worker process's slots deliveries may hold at once (at least one);
    # the rest wait their turn, so receivers that hang never take the jobs' slots.
    webhook_slot_share: float = Field(default=0.25, gt=0, le=1)

    # The address clients reach this API at; webhook events link to it.
    public_url: str = "http://127.0.0.1:8000"

    def rate_limits(self) -> dict[str, tuple[tuple[float, int], ...]]:
        """Per kind of upstream call: (window seconds, calls allowed) for each window."""
        minute, hour = (
            60.0 * self.upstream_rate_window_scale,
            3600.0 * self.upstream_rate_window_scale,
        )
        return {
            "fit": ((minute, self.upstream_fits_per_minute), (hour, self.upstream_fits_per_hour)),
            "predict": (
                (minute, self.upstream_predictions_per_minute),
                (hour, self.upstream_predictions_per_hour),
            ),
            "upload": (
                (minute, self.upstream_uploads_per_minute),
                (hour, self.upstream_uploads_per_hour),
            ),
        }

    # The forms providers hand out are accepted and mapped to the installed
    # drivers; anything else stops start-up with one line (invalid_settings_line).
    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str | None) -> str | None:
        return normalize_database_url(url) if url else url

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        return normalize_redis_url(url) if url else url

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, level: str) -> str:
        return level.upper() if isinstance(level, str) else level

    # Read when a delivery fails, long after start-up: checked at start-up instead
    # (a "5s" here left the first failed delivery pending for good).
    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _retry_schedule(cls, schedule: str) -> str:
        try:
            delays = [float(d) for d in schedule.split(",") if d.strip()]
        except ValueError:
            delays = []
        if not delays or any(not 0 <= d < float("inf") for d in delays):
            raise ValueError(
                "WEBHOOK_RETRY_SCHEDULE_S must be seconds separated by commas, e.g. 5,30,120"
            )
        return schedule

    # A lease shorter than two heartbeats takes live runs for lost: each job ran twice.
    @model_validator(mode="after")
    def _lease_outlasts_heartbeats(self) -> Settings:
        if self.lease_timeout_s < 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"LEASE_TIMEOUT_S ({self.lease_timeout_s:g}) must be at least twice "
                f"HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s:g}), or running jobs are "
                "taken for lost and run again"
            )
        return self

    # A key that outlived its job's data replayed a job whose result was gone, where a
    # retry wants its result: a key is forgotten no later than its job's data.
    @model_validator(mode="after")
    def _keys_go_before_their_data(self) -> Settings:
        if self.idempotency_ttl_s is None:
            self.idempotency_ttl_s = min(24 * 3600.0, self.retention_s)
        elif self.idempotency_ttl_s > self.retention_s:
            raise ValueError(
                f"IDEMPOTENCY_TTL_S ({self.idempotency_ttl_s:g}) must not exceed RETENTION_S "
                f"({self.retention_s:g}), or a retry replays a job whose result was deleted"
            )
        return self

    def webhook_retry_delays(self) -> list[float]:
        return [float(d) for d in self.webhook_retry_schedule_s.split(",") if d.strip()]

    def secret_keys(self) -> list[str]:
        return [k.strip() for k in (self.secret_key or "").split(",") if k.strip()]

    def require(self, *names: str) -> Settings:
        """Raise MissingSettingError naming every unset variable of `names` at once."""
        missing = [name.upper() for name in names if not getattr(self, name.lower(), None)]
        if len(missing) == 1:
            raise MissingSettingError(
                f"{missing[0]} is not set: export it or put it in .env (see .env.example)."
            )
        if missing:
            listed = ", ".join(missing[:-1]) + f" and {missing[-1]}"
            raise MissingSettingError(
                f"{listed} are not set: export them or put them in .env (see .env.example)."
            )
        return self


def invalid_settings_line(exc: ValidationError) -> str:
    """One line naming each invalid variable and why, never its value (it may hold a password)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(p) for p in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        # Our validators name the variable themselves.
        parts.append(message if message.startswith(name) else f"{name}: {message}")
    return "; ".join(parts)


@lru_cache
def get_settings() -> Settings:
    """Raises pydantic's ValidationError for invalid values: commands print it in one
    line (invalid_settings_line)."""
    return Settings()
