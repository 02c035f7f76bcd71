"""SECRET_KEY rotation: add a key, rotate, remove the old one; tokens stay readable."""

from __future__ import annotations

import subprocess
import sys

from cli.supervisor import BIN
from cli.throwaway import base_env, create_database, drop_database, migrate

STORE = """
from shared.core.db import session_scope
from shared.models import User
from shared.accounts.security import encrypt_secret
with session_scope() as s:
    s.add(User(tabpfn_token_encrypted=encrypt_secret("tok-1"),
               webhook_secret_encrypted=encrypt_secret("whsec_1")))
"""
READ = """
from sqlalchemy import select
from shared.core.db import session_scope
from shared.models import User
from shared.accounts.security import decrypt_secret
with session_scope() as s:
    u = s.scalars(select(User)).one()
    print(decrypt_secret(u.tabpfn_token_encrypted), decrypt_secret(u.webhook_secret_encrypted))
"""
# Whether the stored fingerprint is the token's under the first key of SECRET_KEY.
FINGERPRINT_CURRENT = """
from sqlalchemy import select
from shared.core.db import session_scope
from shared.models import User
from shared.accounts.security import token_fingerprint
with session_scope() as s:
    print(s.scalars(select(User)).one().tabpfn_token_fingerprint == token_fingerprint("tok-1"))
"""


def _python(code: str, url: str, secret_key: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=base_env(DATABASE_URL=url, SECRET_KEY=secret_key),
        timeout=60,
    )


def _rotate(url: str, secret_key: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN), "rotate-secret"],
        capture_output=True,
        text=True,
        env=base_env(DATABASE_URL=url, SECRET_KEY=secret_key),
        timeout=60,
    )


def test_add_rotate_remove(services):
    url = create_database(services.admin_database_url)
    try:
        migrate(url)
        assert _python(STORE, url, "old-key").returncode == 0
        assert _python(READ, url, "new-key,old-key").stdout.split() == ["tok-1", "whsec_1"]

        rotated = _rotate(url, "new-key,old-key")
        assert rotated.returncode == 0, rotated.stderr
        assert "1 user(s)" in rotated.stdout
        assert "new-key" not in rotated.stdout + rotated.stderr

        assert _python(READ, url, "new-key").stdout.split() == ["tok-1", "whsec_1"]
        # Fingerprints were recomputed with the new first key (this row had none).
        assert _python(FINGERPRINT_CURRENT, url, "new-key").stdout.split() == ["True"]
        assert _python(FINGERPRINT_CURRENT, url, "old-key").stdout.split() == ["False"]
        stale = _python(READ, url, "old-key")
        assert stale.returncode != 0
        assert "could not be decrypted" in stale.stderr
    finally:
        drop_database(services.admin_database_url, url)


# A user whose secrets were stored with a key that is no longer in SECRET_KEY.
STORE_LOST = """
from shared.core.db import session_scope
from shared.models import User
from shared.accounts.security import encrypt_secret
with session_scope() as s:
    u = User(tabpfn_token_encrypted=encrypt_secret("tok-lost"),
             webhook_secret_encrypted=encrypt_secret("whsec_lost"))
    s.add(u)
    s.flush()
    print(u.id)
"""


def test_an_unreadable_row_is_reported_and_the_rest_rotated(services):
    """One such row rolled back its batch and stopped every run: the rows after it
    were never re-keyed, and became unreadable once the old key was dropped."""
    url = create_database(services.admin_database_url)
    try:
        migrate(url)
        assert _python(STORE, url, "old-key").returncode == 0
        lost = _python(STORE_LOST, url, "lost-key")
        assert lost.returncode == 0, lost.stderr
        lost_id = lost.stdout.strip()

        rotated = _rotate(url, "new-key,old-key")
        assert rotated.returncode == 1, rotated.stdout + rotated.stderr
        assert "Re-encrypted the secrets of 1 user(s)" in rotated.stdout
        assert "1 user(s) hold a secret no key in SECRET_KEY decrypts" in rotated.stderr
        assert lost_id in rotated.stderr
        assert "Traceback" not in rotated.stderr
        for secret in ("new-key", "old-key", "tok-", "whsec_"):
            assert secret not in rotated.stdout + rotated.stderr
        # The readable row was re-keyed all the same: the new key alone reads it.
        others = "select(User).where(User.id != LOST)).one()"
        read_first = f"LOST = {lost_id!r}\n" + READ.replace("select(User)).one()", others)
        assert _python(read_first, url, "new-key").stdout.split() == ["tok-1", "whsec_1"]
    finally:
        drop_database(services.admin_database_url, url)
