"""Accounts keyed by bearer token, each with its own uploads, fitted models and usage.

Accounts are named by a hash of their token, so neither the log nor any response
ever carries a plain token. One lock guards the whole store: the emulator is small
and a single lock keeps every multi-step update (dedup check then insert) atomic.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID


def account_name(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass
class StoredFile:
    hash: str | None
    chunks: list[bytes | None]

    @property
    def complete(self) -> bool:
        return all(c is not None for c in self.chunks)

    def data(self) -> bytes:
        return b"".join(c for c in self.chunks if c is not None)


@dataclass
class Upload:
    id: UUID
    kind: Literal["train", "test"]
    files: dict[str, StoredFile]
    dedup_key: tuple[str, ...] | None = None

    @property
    def complete(self) -> bool:
        return all(f.complete for f in self.files.values())


@dataclass
class FittedModel:
    id: UUID
    upload_id: UUID
    task: str
    submitted_at: float
    # A pending fit reports "pending" at least until this wall-clock time.
    ready_at: float
    # Set by whoever trains the model, before `done` is set.
    standin: Any = None
    error: str | None = None
    # (rows, columns) of the train set, for the token cost of predictions.
    train_shape: tuple[int, int] | None = None
    train_set_transform_s: float | None = None
    fit_s: float | None = None
    finished_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def finish(
        self,
        *,
        standin: Any = None,
        error: str | None = None,
        transform_s: float | None = None,
        fit_s: float | None = None,
    ) -> None:
        self.standin = standin
        self.error = error
        self.train_set_transform_s = transform_s
        self.fit_s = fit_s
        self.finished_at = time.time()
        self.done.set()

    def is_ready(self, now: float) -> bool:
        return self.done.is_set() and now >= self.ready_at


@dataclass
class Account:
    name: str
    uploads: dict[UUID, Upload] = field(default_factory=dict)
    models: dict[UUID, FittedModel] = field(default_factory=dict)
    usage: int = 0
    usage_day: str = ""


def _next_utc_midnight(now: datetime) -> datetime:
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


class AccountStore:
    def __init__(self, tokens: list[str]) -> None:
        self._lock = threading.RLock()
        self._names = {account_name(t) for t in tokens}
        self._accounts: dict[str, Account] = {}
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._accounts = {name: Account(name) for name in self._names}

    def authenticate(self, token: str | None) -> Account | None:
        if not token:
            return None
        with self._lock:
            return self._accounts.get(account_name(token))

    def by_name(self, name: str) -> Account | None:
        with self._lock:
            return self._accounts.get(name)

    def find_duplicate(self, account: Account, dedup_key: tuple[str, ...]) -> Upload | None:
        with self._lock:
            for upload in account.uploads.values():
                if upload.dedup_key == dedup_key and upload.complete:
                    return upload
        return None

    def create_upload(
        self,
        account: Account,
        kind: Literal["train", "test"],
        files: dict[str, tuple[str | None, int]],
        dedup_key: tuple[str, ...] | None,
    ) -> Upload:
        upload = Upload(
            id=uuid.uuid4(),
            kind=kind,
            files={name: StoredFile(hash=h, chunks=[None] * n) for name, (h, n) in files.items()},
            dedup_key=dedup_key,
        )
        with self._lock:
            account.uploads[upload.id] = upload
        return upload

    def put_chunk(
        self, account: Account, upload_id: UUID, file: str, index: int, data: bytes
    ) -> bool:
        with self._lock:
            upload = account.uploads.get(upload_id)
            if upload is None or file not in upload.files:
                return False
            chunks = upload.files[file].chunks
            if not 0 <= index < len(chunks):
                return False
            chunks[index] = data
            return True

    def get_upload(self, account: Account, upload_id: UUID) -> Upload | None:
        with self._lock:
            return account.uploads.get(upload_id)

    def add_model(self, account: Account, model: FittedModel) -> None:
        with self._lock:
            account.models[model.id] = model

    def get_model(self, account: Account, model_id: UUID) -> FittedModel | None:
        with self._lock:
            return account.models.get(model_id)

    def delete_dataset(self, account: Account, uid: UUID) -> list[UUID]:
        """Forget an upload or fitted model, and the models fitted on a deleted upload."""
        with self._lock:
            deleted: list[UUID] = []
            if account.uploads.pop(uid, None) is not None:
                deleted.append(uid)
            for model in list(account.models.values()):
                if model.id == uid or model.upload_id == uid:
                    del account.models[model.id]
                    deleted.append(model.id)
            return deleted

    def usage(self, account: Account) -> tuple[int, datetime]:
        with self._lock:
            now = datetime.now(UTC)
            self._roll_usage_day(account, now)
            return account.usage, _next_utc_midnight(now)

    def consume_predict(self, account: Account, limit: int) -> tuple[bool, int, datetime]:
        """Count one predict call; refuse it once the daily limit is spent."""
        with self._lock:
            now = datetime.now(UTC)
            self._roll_usage_day(account, now)
            reset_time = _next_utc_midnight(now)
            if limit != -1 and account.usage >= limit:
                return False, account.usage, reset_time
            account.usage += 1
            return True, account.usage, reset_time

    @staticmethod
    def _roll_usage_day(account: Account, now: datetime) -> None:
        today = now.date().isoformat()
        if account.usage_day != today:
            account.usage_day = today
            account.usage = 0
