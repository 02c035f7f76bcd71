"""Re-encrypt every stored secret with the first key of SECRET_KEY, and
recompute every token fingerprint with it (or compute it, for rows from
before fingerprints existed).

Rotation: put the new key first (`SECRET_KEY=new,old`), deploy, run
`tabpfn-api rotate-secret`, then drop the old key (`SECRET_KEY=new`).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from shared.accounts.security import (
    SecretUnreadable,
    decrypt_secret,
    reencrypt_secret,
    token_fingerprint,
)
from shared.core.db import session_scope
from shared.models import User

BATCH = 500


def rotate_stored_secrets() -> tuple[int, list[uuid.UUID]]:
    """How many users' secrets were re-encrypted, and the users whose secrets no key
    in SECRET_KEY decrypts (left as they are).

    One unreadable row rolled back its whole batch, and every run stopped there:
    the rows after it were never re-keyed, and unreadable once the old key went."""
    done = 0
    unreadable: list[uuid.UUID] = []
    last_id = None
    while True:
        with session_scope() as session:
            query = select(User).order_by(User.id).limit(BATCH).with_for_update()
            if last_id is not None:
                query = query.where(User.id > last_id)
            users = list(session.scalars(query))
            for user in users:
                try:
                    token = reencrypt_secret(user.tabpfn_token_encrypted)
                    secret = reencrypt_secret(user.webhook_secret_encrypted)
                    fingerprint = token_fingerprint(decrypt_secret(token))
                except SecretUnreadable:
                    unreadable.append(user.id)
                    continue
                user.tabpfn_token_encrypted = token
                user.webhook_secret_encrypted = secret
                user.tabpfn_token_fingerprint = fingerprint
                done += 1
        if not users:
            return done, unreadable
        last_id = users[-1].id
