"""Signed upload URLs: like a GCS signed URL, the URL itself is the credential.

The signature binds account, upload, file and chunk, so a URL cannot be replayed
against another upload or account, and no bearer token is needed to use it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode
from uuid import UUID


@dataclass(frozen=True)
class UploadTarget:
    account: str
    upload_id: UUID
    file: str
    chunk: int


class UrlSigner:
    def __init__(self, key: bytes | None = None) -> None:
        # A fresh key per process: URLs die with the in-memory data they point to.
        self._key = key or secrets.token_bytes(32)

    def _signature(self, target: UploadTarget, expires: int) -> str:
        message = f"{target.account}|{target.upload_id}|{target.file}|{target.chunk}|{expires}"
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def sign(self, base_url: str, target: UploadTarget, ttl_s: float) -> tuple[str, float]:
        expires = int(time.time() + ttl_s)
        query = urlencode(
            {"account": target.account, "expires": expires, "sig": self._signature(target, expires)}
        )
        path = f"_storage/{target.upload_id}/{target.file}/{target.chunk}"
        return f"{base_url.rstrip('/')}/{path}?{query}", float(expires)

    def verify(self, target: UploadTarget, expires: int, signature: str) -> str | None:
        """Return why the URL is refused, or None when it is valid."""
        if not hmac.compare_digest(self._signature(target, expires), signature):
            return "SignatureDoesNotMatch"
        if time.time() > expires:
            return "ExpiredToken"
        return None
