"""How the API answers a database's refusal of a value, without a database."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError

from api.errors import install_error_handlers


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
