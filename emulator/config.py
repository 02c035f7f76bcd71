"""Knobs of the emulator, read from `EMULATOR_*` environment variables."""

from __future__ import annotations

from typing import Annotated

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
