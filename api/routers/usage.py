"""The caller's usage of their TabPFN account, as the upstream reports it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CurrentUser
from api.schemas import ErrorOut
from shared.security import decrypt_secret
from shared.upstream import fetch_usage

router = APIRouter(tags=["usage"])


@router.get(
    "/usage",
    summary="Your TabPFN account's usage",
    responses={
        401: {"model": ErrorOut, "description": "unauthorized or upstream_auth_failed"},
        503: {"model": ErrorOut, "description": "upstream_unavailable"},
    },
)
def get_usage(user: CurrentUser) -> dict[str, Any]:
    """`current_usage`, `usage_limit` (-1: unlimited) and `reset_time`, from TabPFN."""
    return fetch_usage(decrypt_secret(user.tabpfn_token_encrypted))
