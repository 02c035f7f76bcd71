"""Users and their API keys: sign-up with a TabPFN token, and authentication."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.orm import Session, configure_mappers

from shared.accounts.security import (
    NewApiKey,
    VerifiedKeyCache,
    decrypt_secret,
    encrypt_secret,
    new_api_key,
    new_webhook_secret,
    parse_key_id,
    token_fingerprint,
    token_fingerprints,
    verify_api_key,
)
from shared.core.config import get_settings
from shared.core.db import get_sessionmaker, session_scope
from shared.core.errors import (
    INVALID_API_KEY,
    LastActiveKey,
    NotFound,
    TabpfnTokenInUse,
    Unauthorized,
)
from shared.models import ApiKey, User
from shared.upstream.account import verify_tabpfn_token

_verified_keys = VerifiedKeyCache(ttl_s=get_settings().api_key_cache_s)


@dataclass(frozen=True)
class Registration:
    user: User
    key_id: str
    api_key: str
    webhook_secret: str
    # True when the token already had an account: a new key for it, not a new user.
    existing: bool


def register_user(*, session: Session, tabpfn_token: str) -> Registration:
    """A new API key for the account of a TabPFN token the upstream accepts.

    The same token finds the same account (by its keyed fingerprint), so a
    lost API key is recovered by setting up again; a token seen for the first
    time gets a new user. Whoever holds the token could spend the TabPFN
    account directly anyway (docs/security.md).
    """
    verify_tabpfn_token(tabpfn_token)
    fingerprint = token_fingerprint(tabpfn_token)
    _lock_token(session, fingerprint)
    user = find_user_by_token(session=session, tabpfn_token=tabpfn_token)
    if user is not None:
        key = create_api_key(session=session, user=user)
        return Registration(
            user=user,
            key_id=key.key_id,
            api_key=key.api_key,
            webhook_secret=decrypt_secret(user.webhook_secret_encrypted),
            existing=True,
        )
    webhook_secret = new_webhook_secret()
    user = User(
        tabpfn_token_encrypted=encrypt_secret(tabpfn_token),
        tabpfn_token_fingerprint=fingerprint,
        webhook_secret_encrypted=encrypt_secret(webhook_secret),
    )
    session.add(user)
    session.flush()
    key = create_api_key(session=session, user=user)
    return Registration(
        user=user,
        key_id=key.key_id,
        api_key=key.api_key,
        webhook_secret=webhook_secret,
        existing=False,
    )


def _lock_token(session: Session, fingerprint: str) -> None:
    # Until the transaction ends: two requests with one new token at once
    # must not both find no account and make two.
    session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": int(fingerprint[:15], 16)})


def find_user_by_token(*, session: Session, tabpfn_token: str) -> User | None:
    """The oldest account holding `tabpfn_token`, or None."""
    fingerprints = token_fingerprints(tabpfn_token)
    query = (
        select(User)
        .where(User.tabpfn_token_fingerprint.in_(fingerprints))
        .order_by(User.created_at)
        .limit(1)
    )
    user = session.scalars(query).first()
    if user is None:
        user = _fill_missing_fingerprints(session=session, tabpfn_token=tabpfn_token)
    if user is not None and user.tabpfn_token_fingerprint != fingerprints[0]:
        user.tabpfn_token_fingerprint = fingerprints[0]  # was keyed by an older SECRET_KEY
    return user


def _fill_missing_fingerprints(*, session: Session, tabpfn_token: str) -> User | None:
    """Fingerprint rows from before the column existed; the oldest holding the token.

    A migration cannot compute fingerprints (it has no SECRET_KEY), so the
    first setup that misses does it for every such row, once; so does
    `tabpfn-api rotate-secret`.
    """
    query = (
        select(User)
        .where(User.tabpfn_token_fingerprint.is_(None))
        .order_by(User.created_at)
        .with_for_update(skip_locked=True)
    )
    found = None
    for user in session.scalars(query):
        try:
            stored = decrypt_secret(user.tabpfn_token_encrypted)
        except RuntimeError:
            continue  # encrypted with a key no longer in SECRET_KEY: not recoverable
        user.tabpfn_token_fingerprint = token_fingerprint(stored)
        if found is None and hmac.compare_digest(stored, tabpfn_token):
            found = user
    return found


# Built once: composing the statement cost more CPU than running it, per request.
_KEY_AND_OWNER = (
    select(ApiKey, User)
    .join(User, User.id == ApiKey.user_id)
    .where(ApiKey.id == bindparam("key_id"))
)


def authenticate(*, session: Session, api_key: str) -> tuple[User, str]:
    """The user owning `api_key` and the key's id, or Unauthorized.

    The key's row is read on every request, so a revoked key stops working at
    once; only the bcrypt comparison is skipped for recently verified keys.
    """
    key_id = parse_key_id(api_key)
    # The key and its owner in one round trip: this runs on every request.
    found = session.execute(_KEY_AND_OWNER, {"key_id": key_id}).one_or_none() if key_id else None
    if found is None or found.ApiKey.revoked_at is not None:
        raise Unauthorized(INVALID_API_KEY)
    row, user = found.ApiKey, found.User
    if not _verified_keys.hit(row.id, api_key):
        with _verified_keys.verifying(row.id):
            # Another request may have verified the same key while this one waited.
            if not _verified_keys.hit(row.id, api_key):
                if not verify_api_key(api_key, row.key_hash):
                    raise Unauthorized(INVALID_API_KEY)
                _verified_keys.remember(row.id, api_key)
    _note_use(session, row)
    return user, row.id


_KEY_REVOKED_AT = select(ApiKey.revoked_at).where(ApiKey.id == bindparam("key_id"))


def ensure_key_active(*, session: Session, key_id: str) -> None:
    """Unauthorized if the key was revoked since it was checked.

    For requests that wait (long-polls, event streams): their key was checked
    when they began, and is checked again before each answer that follows a
    wait, so a key revoked meanwhile receives nothing more."""
    found = session.execute(_KEY_REVOKED_AT, {"key_id": key_id}).one_or_none()
    if found is None or found.revoked_at is not None:
        raise Unauthorized(INVALID_API_KEY)


# A write on every request would cost more than the knowledge is worth: once a minute.
LAST_USED_EVERY_S = 60.0
# Written only where no other request holds the key's row: a burst of one key's
# requests a minute after its last use all read it stale, and waiting for the row
# in their own transactions (held across a request's thread hops until its
# commit) convoyed them, and past anyio's 40 threads deadlocked the process until
# the pool's 30 s timeout (tests/e2e/test_request_burst.py). Now the first to
# take the row writes it, and the others, finding it taken, go on without.
_NOTE_USE = text(
    """
    UPDATE api_keys SET last_used_at = :now
    WHERE id = (SELECT id FROM api_keys
                WHERE id = :key_id AND (last_used_at IS NULL OR last_used_at < :stale)
                FOR NO KEY UPDATE SKIP LOCKED)
    """
)


def _note_use(session: Session, row: ApiKey) -> None:
    now = datetime.now(UTC)
    last = row.last_used_at
    if last is not None and (now - last).total_seconds() <= LAST_USED_EVERY_S:
        return
    stale = now - timedelta(seconds=LAST_USED_EVERY_S)
    session.execute(_NOTE_USE, {"now": now, "key_id": row.id, "stale": stale})


def create_api_key(*, session: Session, user: User, name: str | None = None) -> NewApiKey:
    key = new_api_key()
    session.add(ApiKey(id=key.key_id, user_id=user.id, key_hash=key.key_hash, name=name))
    session.flush()
    return key


def list_api_keys(*, session: Session, user: User) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at)
    return list(session.scalars(query))


def revoke_api_key(*, session: Session, user: User, key_id: str) -> None:
    """Revoke at once: every API process reads the key's row on each request."""
    # The owner's row locked first: two requests revoking each other's key at once
    # must not both count two active keys and leave none. FOR NO KEY UPDATE: job
    # inserts (which only key-share the row) need not wait.
    session.execute(select(User.id).where(User.id == user.id).with_for_update(key_share=True))
    row = session.get(ApiKey, key_id, populate_existing=True)
    if row is None or row.user_id != user.id or row.revoked_at is not None:
        raise NotFound(f"No active API key {key_id}.")
    active = session.scalar(
        select(func.count()).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
    )
    if active <= 1:
        raise LastActiveKey("This is your last active API key; create another before revoking it.")
    row.revoked_at = datetime.now(UTC)


def replace_tabpfn_token(*, user_id: uuid.UUID, tabpfn_token: str) -> None:
    """Store a new TabPFN token for the user, once the upstream accepts it.

    A token that is another account's is refused: one token, one account, so
    that setup with it keeps finding the right one. The upstream check runs
    before the transaction opens: no pooled connection waits on TabPFN.
    """
    verify_tabpfn_token(tabpfn_token)
    fingerprint = token_fingerprint(tabpfn_token)
    with session_scope() as session:
        _lock_token(session, fingerprint)
        owner = find_user_by_token(session=session, tabpfn_token=tabpfn_token)
        if owner is not None and owner.id != user_id:
            raise TabpfnTokenInUse(
                "This TabPFN token belongs to another account here; to use that account, "
                "call POST /auth/setup with the token."
            )
        replaced = session.execute(
            update(User)
            .where(User.id == user_id)
            .values(
                tabpfn_token_encrypted=encrypt_secret(tabpfn_token),
                tabpfn_token_fingerprint=fingerprint,
            )
        )
        _account_still_there(replaced.rowcount)


def rotate_webhook_secret(*, session: Session, user: User) -> str:
    secret = new_webhook_secret()
    rotated = session.execute(
        update(User)
        .where(User.id == user.id)
        .values(webhook_secret_encrypted=encrypt_secret(secret))
        .execution_options(synchronize_session=False)
    )
    _account_still_there(rotated.rowcount)
    return secret


def _account_still_there(rows_updated: int) -> None:
    """Unauthorized when the caller's account row is gone: deleted (DELETE /auth/me) after
    this request was authenticated. Its keys went with it; so does this answer."""
    if rows_updated == 0:
        raise Unauthorized(INVALID_API_KEY)


def warm_up_queries() -> None:
    """The first connection, and the ORM's one-time work (mapper configuration,
    statement compilation) for the queries setup and authentication make."""
    configure_mappers()
    with get_sessionmaker()() as session:
        session.execute(text("select 1"))
        session.scalars(select(User).where(User.tabpfn_token_fingerprint.in_([""]))).first()
        session.execute(
            select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.id == "")
        )
