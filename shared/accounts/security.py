"""API keys (bcrypt at rest, public id inside) and token encryption (Fernet).

An API key reads `tpa_<key_id>_<secret>`: the key id finds the row without
scanning hashes; only the bcrypt hash of the whole key is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from passlib.context import CryptContext

from shared.core.config import get_settings

KEY_PREFIX = "tpa"
_SECRET_CHARS = 43  # secrets.token_urlsafe(32)
# Fixed length, well under bcrypt's 72-byte limit (bcrypt 5 raises beyond it).
API_KEY_LENGTH = len(KEY_PREFIX) + 1 + 16 + 1 + _SECRET_CHARS
_hasher = CryptContext(schemes=["bcrypt"], deprecated="auto")


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    api_key: str
    key_hash: str


def new_api_key() -> NewApiKey:
    key_id = secrets.token_hex(8)
    api_key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return NewApiKey(key_id=key_id, api_key=api_key, key_hash=_hasher.hash(api_key))


def parse_key_id(api_key: str) -> str | None:
    """The public key id inside a key, or None when the key is malformed."""
    if len(api_key) != API_KEY_LENGTH:
        return None
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 16:
        return None
    return parts[1]


class VerifiedKeyCache:
    """Remembers successful bcrypt verifications while a key keeps being used.

    bcrypt costs ~0.3 s here, so verifying on every request would make the API
    CPU-bound. Entries hold a SHA-256 of the key, never the key, and expire
    `ttl_s` after the key's last use. Revocation is not affected: the caller
    still reads the key's row (and its revoked_at) on every request; only the
    hash comparison is skipped. Concurrent first requests of one key wait for a
    single bcrypt run instead of each starting their own.
    """

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        self._verifying: dict[str, threading.Lock] = {}

    def hit(self, key_id: str, api_key: str) -> bool:
        digest = hashlib.sha256(api_key.encode()).digest()
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key_id)
            if entry is None or entry[1] < now or not hmac.compare_digest(entry[0], digest):
                return False
            self._entries[key_id] = (digest, now + self._ttl_s)
            return True

    def remember(self, key_id: str, api_key: str) -> None:
        digest = hashlib.sha256(api_key.encode()).digest()
        with self._lock:
            self._entries[key_id] = (digest, time.monotonic() + self._ttl_s)

    def verifying(self, key_id: str) -> threading.Lock:
        """A lock per key id, held while that key's bcrypt check runs."""
        with self._lock:
            return self._verifying.setdefault(key_id, threading.Lock())


def verify_api_key(api_key: str, key_hash: str) -> bool:
    return _hasher.verify(api_key, key_hash)


def warm_api_key_hasher() -> None:
    """Load bcrypt and run passlib's self-test now, not in a user's first request."""
    _hasher.verify("warm-up", _hasher.hash("warm-up"))


def warm_secret_box() -> None:
    """Build OpenSSL's AES context once now: a process's first decrypt costs ~4 ms more."""
    decrypt_secret(encrypt_secret("warm-up"))


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _fernet_key(secret: str) -> bytes:
    # HKDF turns any SECRET_KEY string into a 32-byte Fernet key; the info
    # label keeps this key distinct from anything else derived from it.
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"tabpfn-api token encryption"
    ).derive(secret.encode())
    return base64.urlsafe_b64encode(derived)


def _cipher() -> MultiFernet:
    keys = get_settings().require("SECRET_KEY").secret_keys()
    return MultiFernet([Fernet(_fernet_key(k)) for k in keys])


def _first_secret_key() -> str:
    return get_settings().require("SECRET_KEY").secret_keys()[0]


def token_fingerprint(token: str) -> str:
    """A keyed hash of a TabPFN token: finds its account and its upstream budget, reveals nothing."""  # noqa: E501
    key = hashlib.sha256(b"tabpfn-api/token-fingerprint/" + _first_secret_key().encode()).digest()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def token_fingerprints(token: str) -> list[str]:
    """The token's fingerprint under every key of SECRET_KEY, the first key's first.

    Rows are looked up by all of them: between putting a new key first and
    `tabpfn-api rotate-secret` recomputing, stored fingerprints use an older key.
    """
    found = []
    for secret in get_settings().require("SECRET_KEY").secret_keys():
        key = hashlib.sha256(b"tabpfn-api/token-fingerprint/" + secret.encode()).digest()
        found.append(hmac.new(key, token.encode(), hashlib.sha256).hexdigest())
    return found


def encrypt_secret(plaintext: str) -> bytes:
    return _cipher().encrypt(plaintext.encode())


def reencrypt_secret(ciphertext: bytes) -> bytes:
    """The same secret encrypted with the first SECRET_KEY (for key rotation)."""
    try:
        return _cipher().rotate(ciphertext)
    except InvalidToken as exc:
        raise SecretUnreadable(
            "A stored secret could not be decrypted with any key in SECRET_KEY."
        ) from exc


class SecretUnreadable(RuntimeError):
    """A stored secret that no key in this process's SECRET_KEY decrypts."""


def decrypt_secret(ciphertext: bytes) -> str:
    try:
        return _cipher().decrypt(ciphertext).decode()
    except InvalidToken as exc:
        raise SecretUnreadable(
            "A stored secret could not be decrypted: SECRET_KEY no longer holds the key "
            "it was encrypted with."
        ) from exc


def decrypt_or_none(ciphertext: bytes) -> str | None:
    """The secret, or None when no key in SECRET_KEY decrypts it (a key rotation under
    way): for best-effort work that must not stop what comes before it."""
    try:
        return decrypt_secret(ciphertext)
    except SecretUnreadable:
        return None
