"""Re-encrypt every stored secret with the first key of SECRET_KEY, and
recompute every token fingerprint with it (or compute it, for rows from
before fingerprints existed).

Rotation: put the new key first (`SECRET_KEY=new,old`), deploy, run
`tabpfn-api rotate-secret`, then drop the old key (`SECRET_KEY=new`).
"""

from __future__ import annotations

from sqlalchemy import select

from shared.accounts.security import decrypt_secret, reencrypt_secret, token_fingerprint
from shared.core.db import session_scope
from shared.models import User

BATCH = 500


def rotate_stored_secrets() -> int:
    """Returns how many users' secrets were re-encrypted."""
    done = 0
    last_id = None
    while True:
        with session_scope() as session:
            query = select(User).order_by(User.id).limit(BATCH).with_for_update()
            if last_id is not None:
                query = query.where(User.id > last_id)
            users = list(session.scalars(query))
            for user in users:
                user.tabpfn_token_encrypted = reencrypt_secret(user.tabpfn_token_encrypted)
                user.webhook_secret_encrypted = reencrypt_secret(user.webhook_secret_encrypted)
                user.tabpfn_token_fingerprint = token_fingerprint(
                    decrypt_secret(user.tabpfn_token_encrypted)
                )
        if not users:
            return done
        done += len(users)
        last_id = users[-1].id
