"""How the API answers a database's refusal of a value, without a database."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError, IntegrityError

from api.errors import install_error_handlers

# A stored value (a user's data, a secret): a database error's log line never shows it.
VALUE = "s3cr3t-value"


def test_a_value_the_database_cannot_store_is_422_not_a_503_to_retry():
    # Retrying the same request never helps (api/errors.py); nothing is stored.
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/store")
    def store() -> None:
        reason = "unsupported Unicode escape sequence\nDETAIL: \\u0000 cannot be converted to text."
        raise DataError("INSERT INTO jobs ...", {}, Exception(reason))

    response = TestClient(app).post("/store")
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "cannot store" in response.json()["detail"]


def test_a_database_error_is_a_503_logged_with_its_traceback_but_not_its_values(caplog):
    app = FastAPI()
    install_error_handlers(app)

    class UniqueViolation(Exception):
        pgcode = "23505"

    @app.post("/store")
    def store() -> None:
        reason = f'duplicate key value violates unique constraint "k"\nDETAIL:  Key (k)=({VALUE}).'
        # (The traceback shows this line: the value is named, not written, here.)
        raise IntegrityError("INSERT INTO t ...", {"k": VALUE}, UniqueViolation(reason))

    client = TestClient(app)
    with caplog.at_level("ERROR", logger="api.errors"):
        answers = [client.post("/store") for _ in range(2)]
    assert [(a.status_code, a.json()["code"]) for a in answers] == [
        (503, "service_unavailable")
    ] * 2
    first, second = caplog.records
    summary = 'IntegrityError (SQLSTATE 23505): duplicate key value violates unique constraint "k"'
    assert first.getMessage().endswith(summary)
    assert first.exc_info is not None and second.exc_info is None  # one traceback a minute
    assert "in store" in caplog.text  # where the statement ran
    assert VALUE not in caplog.text
