"""Sign-up with a TabPFN token, API keys, and the stored token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response, status

from api.deps import Caller, CurrentUser, SessionDep
from api.schemas import (
    ApiKeyOut,
    ErrorOut,
    MeOut,
    NewKeyRequest,
    NewKeyResponse,
    SetupRequest,
    SetupResponse,
    TokenRequest,
    WebhookSecretOut,
)
from shared.accounts import users
from shared.accounts.deletion import delete_account

router = APIRouter(prefix="/auth", tags=["auth"])

_UPSTREAM_ERRORS = {
    401: {"model": ErrorOut, "description": "upstream_auth_failed: TabPFN rejected the token"},
    503: {"model": ErrorOut, "description": "upstream_unavailable: TabPFN unreachable"},
}


@router.post(
    "/setup",
    status_code=status.HTTP_201_CREATED,
    summary="Register a TabPFN token and receive an API key",
    responses=_UPSTREAM_ERRORS,
)
def setup(body: SetupRequest, session: SessionDep) -> SetupResponse:
    """The token is verified with TabPFN first, then stored encrypted. The API key and
    webhook secret are shown only in this response: keep them.

    A token that already has an account gets a new API key for that account
    (`"account": "existing"`, same `user_id`, its models and jobs): setting up
    again is how a lost key is recovered. Earlier keys keep working until revoked."""
    registration = users.register_user(session=session, tabpfn_token=body.tabpfn_token)
    return SetupResponse(
        api_key=registration.api_key,
        key_id=registration.key_id,
        user_id=registration.user.id,
        webhook_secret=registration.webhook_secret,
        account="existing" if registration.existing else "new",
    )


@router.post("/keys", status_code=status.HTTP_201_CREATED, summary="Create another API key")
def create_key(
    session: SessionDep,
    user: CurrentUser,
    body: Annotated[NewKeyRequest | None, Body(examples=[{"name": "nightly-etl"}])] = None,
) -> NewKeyResponse:
    """The new key is shown only in this response. Give it a `name` (optional; the body
    may be left out) to tell it apart in `GET /auth/keys`."""
    name = body.name if body is not None else None
    key = users.create_api_key(session=session, user=user, name=name)
    return NewKeyResponse(api_key=key.api_key, key_id=key.key_id, name=name)


@router.get("/keys", summary="List your API keys (ids and dates, never the keys)")
def list_keys(session: SessionDep, user: CurrentUser) -> list[ApiKeyOut]:
    return [
        ApiKeyOut.model_validate(k, from_attributes=True)
        for k in users.list_api_keys(session=session, user=user)
    ]


@router.delete(
    "/keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key, at once",
    responses={
        404: {"model": ErrorOut, "description": "not_found"},
        409: {"model": ErrorOut, "description": "last_active_key"},
    },
)
def revoke_key(key_id: str, session: SessionDep, user: CurrentUser) -> Response:
    users.revoke_api_key(session=session, user=user, key_id=key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/tabpfn-token",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Replace your stored TabPFN token",
    responses={
        **_UPSTREAM_ERRORS,
        409: {"model": ErrorOut, "description": "tabpfn_token_in_use: another account's token"},
    },
)
def replace_token(body: TokenRequest, user: Caller) -> Response:
    """Verified with TabPFN first; jobs that run from now on use the new token."""
    # No SessionDep: the service verifies the token with no connection held, then
    # writes in a short session of its own.
    users.replace_tabpfn_token(user_id=user.id, tabpfn_token=body.tabpfn_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/webhook-secret",
    status_code=status.HTTP_201_CREATED,
    summary="Replace your webhook signing secret",
)
def rotate_webhook_secret(session: SessionDep, user: CurrentUser) -> WebhookSecretOut:
    """Events from now on are signed with the new secret, shown only in this response."""
    return WebhookSecretOut(webhook_secret=users.rotate_webhook_secret(session=session, user=user))


@router.get("/me", summary="Who the API key belongs to")
def me(request: Request, session: SessionDep, user: CurrentUser) -> MeOut:
    keys = users.list_api_keys(session=session, user=user)
    return MeOut(
        user_id=user.id,
        created_at=user.created_at,
        key_id=request.state.api_key_id,
        active_keys=sum(k.revoked_at is None for k in keys),
    )


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete your account and everything the service holds for it",
)
def delete_me(user: Caller) -> Response:
    """At once and for good: every API key (this one included), the stored TabPFN
    token and webhook secret, every job with its data and result, every model, every
    webhook delivery. Unfinished jobs stop; their waiters are answered 401.

    The models' copies in your TabPFN account are deleted too, best effort; the
    header `Upstream-Deleted: false` says some are left there (TabPFN could not be
    reached, or there were too many to delete in 30 s). The uploads that jobs made
    in your TabPFN account are yours to manage there. The same token may set up a
    new, empty account afterwards."""
    # No SessionDep: the service holds a connection only while it deletes the rows,
    # not while TabPFN deletes its copies of the models.
    upstream_deleted = delete_account(user_id=user.id)
    return Response(
        status_code=status.HTTP_204_NO_CONTENT,
        headers={"Upstream-Deleted": str(upstream_deleted).lower()},
    )
