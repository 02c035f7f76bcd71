"""The checked-in OpenAPI document matches the app, and documents every operation."""

from __future__ import annotations

import json
from pathlib import Path

from api.app import create_app
from api.openapi_export import render

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
UNAUTHENTICATED = {"/api/v1/auth/setup", "/api/v1/healthz", "/api/v1/readyz", "/api/v1/metrics"}


def test_checked_in_document_matches_the_app():
    assert DOCUMENT.read_text() == render(), "docs/openapi.json is stale: run `make openapi`"


def test_every_operation_has_a_summary_error_codes_and_examples():
    spec = create_app().openapi()
    schemas = spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary"), f"{where} has no summary"
            errors = {code for code in operation["responses"] if code.startswith(("4", "5"))}
            if path not in UNAUTHENTICATED:
                assert errors - {"422"}, f"{where} documents no error besides 422"
            body = operation.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                ref = content["schema"].get("$ref", "")
                schema = schemas.get(ref.rsplit("/", 1)[-1], content["schema"])
                if media == "application/json":
                    assert schema.get("examples"), f"{where}: {media} body has no example"
    assert json.loads(render()) == spec
