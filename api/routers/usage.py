"""The caller's usage of their TabPFN account, as the upstream reports it."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter

from api.deps import Caller
from api.schemas import ErrorOut
from shared.accounts.security import decrypt_secret, token_fingerprint
from shared.upstream import pacing
from shared.upstream.account import fetch_usage

router = APIRouter(tags=["usage"])


@router.get(
    "/usage",
    summary="Your TabPFN account's usage",
    responses={
        401: {"model": ErrorOut, "description": "unauthorized or upstream_auth_failed"},
        503: {"model": ErrorOut, "description": "upstream_unavailable"},
    },
)
def get_usage(user: Caller) -> dict[str, Any]:
    """`current_usage`, `usage_limit` (-1: unlimited) and `reset_time`, from TabPFN; and
    `rate_windows`: this service's view of the token's per-window request budgets
    (kind fit|predict|upload, window minute|hour, limit, used in the last window's
    length, resets_at: when the oldest of those leaves it), which pace your jobs
    (docs/scheduling.md)."""
    # `Caller`: the key is checked in a session closed at once, so no pooled
    # connection is held while TabPFN answers (up to UPSTREAM_TIMEOUT_S).
    token = decrypt_secret(user.tabpfn_token_encrypted)
    usage = fetch_usage(token)
    try:
        windows = pacing.window_use(token_fingerprint(token))
    except redis.RedisError:  # the budgets live in Redis: absent rather than wrong
        return usage
    usage["rate_windows"] = [
        {
            "kind": w.kind,
            "window": w.window,
            "window_s": w.window_s,
            "limit": w.limit,
            "used": w.used,
            "resets_at": w.resets_at.isoformat(),
        }
        for w in windows
    ]
    return usage
