"""Sign-up: trade a TabPFN token for an API key."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import SessionDep
from api.schemas import ErrorOut, SetupRequest, SetupResponse
from shared.users import register_user

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/setup",
    status_code=status.HTTP_201_CREATED,
    summary="Register a TabPFN token and receive an API key",
    responses={
        401: {"model": ErrorOut, "description": "upstream_auth_failed: TabPFN rejected the token"},
        503: {"model": ErrorOut, "description": "upstream_unavailable: TabPFN unreachable"},
    },
)
def setup(body: SetupRequest, session: SessionDep) -> SetupResponse:
    """The token is verified with TabPFN first, then stored encrypted. The API key and
    webhook secret are shown only in this response: keep them."""
    registration = register_user(session=session, tabpfn_token=body.tabpfn_token)
    return SetupResponse(
        api_key=registration.api_key,
        key_id=registration.key_id,
        user_id=registration.user.id,
        webhook_secret=registration.webhook_secret,
    )
