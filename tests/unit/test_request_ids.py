"""A request's id reaches its response and every line it logs, a crash's 500 included,
in both log formats (no database: the app's start-up is not run)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shared.core.config import get_settings
from shared.core.logging_setup import configure_logging


@pytest.fixture
def log_as(monkeypatch, capsys) -> Iterator:
    """configure_logging() with LOG_FORMAT set; the process's logging is restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def configure(log_format: str) -> None:
        monkeypatch.setenv("LOG_FORMAT", log_format)
        monkeypatch.setenv("LOG_LEVEL", "INFO")
        get_settings.cache_clear()
        configure_logging()  # its handler writes to the stderr capsys captures now

    yield configure
    root.handlers[:], _ = saved
    root.setLevel(saved[1])
    get_settings.cache_clear()


def _crashing_app():
    app = create_app()

    @app.get("/crash")
    def crash() -> None:
        logging.getLogger("some.service").warning("about to fail")
        raise RuntimeError("a bug")

    return app


def _call_crash() -> object:
    client = TestClient(_crashing_app(), raise_server_exceptions=False)
    return client.get("/crash", headers={"X-Request-ID": "crash-1"})


def test_a_500_carries_the_request_id_and_its_lines_name_it_in_text(log_as, capsys):
    log_as("text")
    response = _call_crash()
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert response.headers["x-request-id"] == "crash-1"

    lines = capsys.readouterr().err.splitlines()
    assert any("WARNING some.service [crash-1] about to fail" in line for line in lines)
    assert any("ERROR api.errors [crash-1] unhandled error" in line for line in lines)
    assert any("INFO api.request [crash-1] GET /crash 500" in line for line in lines)
    # One traceback, not a second one from the server without the id.
    assert sum("Traceback" in line for line in lines) == 1
    # Lines outside a request are unchanged.
    logging.getLogger("some.service").warning("no request here")
    assert "WARNING some.service no request here" in capsys.readouterr().err


def test_a_500_is_logged_once_with_its_request_id_in_json(log_as, capsys):
    log_as("json")
    assert _call_crash().headers["x-request-id"] == "crash-1"
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]

    def line(message: str) -> dict:
        return next(line for line in lines if line["message"].startswith(message))

    assert line("about to fail")["request_id"] == "crash-1"
    assert line("unhandled error")["request_id"] == "crash-1"
    assert "RuntimeError: a bug" in line("unhandled error")["exc_info"]
    assert line("GET /crash 500")["request_id"] == "crash-1"
    assert sum("exc_info" in line for line in lines) == 1
