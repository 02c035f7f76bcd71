"""Knobs of the emulator, read from `EMULATOR_*` environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class EmulatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMULATOR_", extra="ignore")

    # NoDecode: the variable is a plain comma-separated list, not JSON.
    tokens: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["demo-token"])
    latency_s: float = Field(default=0.0, ge=0.0)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Predict calls allowed per token and day; -1 means unlimited.
    usage_limit: int = Field(default=-1, ge=-1)
    force_async: bool = False
    async_fit_delay_s: float = Field(default=0.5, ge=0.0)
    # Chunk size used when a client asks for chunked uploads (`use_chunks`).
    upload_chunk_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    signed_url_ttl_s: float = Field(default=3600.0, gt=0.0)
    # Seconds fit and predict calls stall before answering: a hung upstream,
    # for testing the caller's timeouts.
    hang_s: float = Field(default=0.0, ge=0.0)
    # Tokens that were accepted once and are now refused (revoked upstream).
    revoked_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Row limit per train or test set reported by get_settings and enforced.
    max_rows: int = Field(default=10_000, gt=0)
    # The model behind predictions: "forest" (a small random forest, plausible
    # answers) or "trivial" (class frequencies / target quantiles, almost no CPU,
    # for benchmarks that must measure the service and not the emulator).
    model: Literal["forest", "trivial"] = "forest"

    # Per-token request rate windows, as the cloud publishes them per user. Off by
    # default so tests that do not ask for them never meet a 429.
    rate_limits: bool = False
    fits_per_minute: int = Field(default=60, gt=0)
    fits_per_hour: int = Field(default=1_000, gt=0)
    predictions_per_minute: int = Field(default=60, gt=0)
    predictions_per_hour: int = Field(default=1_500, gt=0)
    uploads_per_minute: int = Field(default=120, gt=0)
    uploads_per_hour: int = Field(default=3_000, gt=0)
    # Window lengths are multiplied by this: 0.1 makes a "minute" 6 s, for tests.
    rate_window_scale: float = Field(default=1.0, gt=0.0)
    # Where a fixed window starts: at the first request after the previous one
    # ended (an INCR + EXPIRE limiter), or on the clock (every whole window since
    # the epoch). The cloud does not say which; a caller must keep within both.
    rate_window_start: Literal["first_request", "clock"] = "first_request"

    # Daily and monthly prediction-token pools per token (the cloud's defaults).
    # Off by default, like the rate windows.
    token_pools: bool = False
    daily_tokens: int = Field(default=50_000_000, gt=0)
    monthly_tokens: int = Field(default=200_000_000, gt=0)

    def rate_limits_of(self, kind: str) -> dict[str, int]:
        """The per-window limits of a request kind ("fit", "predict", "upload")."""
        prefix = {"fit": "fits", "predict": "predictions", "upload": "uploads"}[kind]
        return {
            "minute": getattr(self, f"{prefix}_per_minute"),
            "hour": getattr(self, f"{prefix}_per_hour"),
        }

    @field_validator("revoked_tokens", mode="before")
    @classmethod
    def _split_revoked(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            tokens = [str(t).strip() for t in value if str(t).strip()]
            if not tokens:
                raise ValueError("EMULATOR_TOKENS must name at least one token")
            return tokens
        return value
