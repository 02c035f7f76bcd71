"""Users and their API keys: sign-up with a TabPFN token, and authentication."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.config import get_settings
from shared.errors import LastActiveKey, NotFound, Unauthorized
from shared.models import ApiKey, User
from shared.security import (
    NewApiKey,
    VerifiedKeyCache,
    encrypt_secret,
    new_api_key,
    new_webhook_secret,
    parse_key_id,
    verify_api_key,
)
from shared.upstream import verify_tabpfn_token

_verified_keys = VerifiedKeyCache(ttl_s=get_settings().api_key_cache_s)


@dataclass(frozen=True)
class Registration:
    user: User
    key_id: str
    api_key: str
    webhook_secret: str


def register_user(*, session: Session, tabpfn_token: str) -> Registration:
    """Create a user for a TabPFN token the upstream accepts, with a first API key."""
    verify_tabpfn_token(tabpfn_token)
    webhook_secret = new_webhook_secret()
    user = User(
        tabpfn_token_encrypted=encrypt_secret(tabpfn_token),
        webhook_secret_encrypted=encrypt_secret(webhook_secret),
    )
    session.add(user)
    session.flush()
    key = create_api_key(session=session, user=user)
    return Registration(
        user=user, key_id=key.key_id, api_key=key.api_key, webhook_secret=webhook_secret
    )


def authenticate(*, session: Session, api_key: str) -> tuple[User, str]:
    """The user owning `api_key` and the key's id, or Unauthorized.

    The key's row is read on every request, so a revoked key stops working at
    once; only the bcrypt comparison is skipped for recently verified keys.
    """
    key_id = parse_key_id(api_key)
    # The key and its owner in one round trip: this runs on every request.
    found = (
        session.execute(
            select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.id == key_id)
        ).one_or_none()
        if key_id
        else None
    )
    if found is None or found.ApiKey.revoked_at is not None:
        raise Unauthorized("The API key is not valid.")
    row, user = found.ApiKey, found.User
    if not _verified_keys.hit(row.id, api_key):
        with _verified_keys.verifying(row.id):
            # Another request may have verified the same key while this one waited.
            if not _verified_keys.hit(row.id, api_key):
                if not verify_api_key(api_key, row.key_hash):
                    raise Unauthorized("The API key is not valid.")
                _verified_keys.remember(row.id, api_key)
    now = datetime.now(UTC)
    # A write on every request would cost more than the knowledge is worth.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
    return user, row.id


def create_api_key(*, session: Session, user: User) -> NewApiKey:
    key = new_api_key()
    session.add(ApiKey(id=key.key_id, user_id=user.id, key_hash=key.key_hash))
    session.flush()
    return key


def list_api_keys(*, session: Session, user: User) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at)
    return list(session.scalars(query))


def revoke_api_key(*, session: Session, user: User, key_id: str) -> None:
    """Revoke at once: every API process reads the key's row on each request."""
    row = session.get(ApiKey, key_id)
    if row is None or row.user_id != user.id or row.revoked_at is not None:
        raise NotFound(f"No active API key {key_id}.")
    active = session.scalar(
        select(func.count()).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
    )
    if active <= 1:
        raise LastActiveKey("This is your last active API key; create another before revoking it.")
    row.revoked_at = datetime.now(UTC)


def replace_tabpfn_token(*, session: Session, user: User, tabpfn_token: str) -> None:
    """Store a new TabPFN token for the user, once the upstream accepts it."""
    verify_tabpfn_token(tabpfn_token)
    user.tabpfn_token_encrypted = encrypt_secret(tabpfn_token)


def rotate_webhook_secret(*, session: Session, user: User) -> str:
    secret = new_webhook_secret()
    user.webhook_secret_encrypted = encrypt_secret(secret)
    return secret
