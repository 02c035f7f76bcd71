"""One operation, two request bodies: JSON, or a multipart/form-data upload.

(And JSON bodies parsed with orjson: these routes take tables of many rows.)

An endpoint decorated with `multipart_variant(upload_endpoint)` serves
`multipart/form-data` requests with `upload_endpoint` and every other request
as usual. Both are ordinary FastAPI endpoints (dependencies, form parsing,
validation); the upload's form schema is added to the operation's
`requestBody` beside the JSON one, so the OpenAPI document shows a single
operation that accepts either.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
_VARIANT = "__multipart_variant__"
MULTIPART = "multipart/form-data"


def multipart_variant(upload_endpoint: Callable[..., Any]) -> Callable[[Endpoint], Endpoint]:
    """Serve multipart/form-data requests to the decorated endpoint with `upload_endpoint`."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _VARIANT, upload_endpoint)
        return endpoint

    return mark


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith(MULTIPART)


class FastJsonRequest(Request):
    """A request whose JSON body is parsed with orjson, several times faster than json.

    Bodies orjson refuses (NaN or Infinity literals, integers over 64 bits, broken
    JSON, nesting past 1024 levels, bytes that are not UTF-8) go to the standard
    parser, which accepts the first two as before and words the error FastAPI
    reports for broken JSON. What else it cannot read is UnreadableJson.
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._json = _standard_json(body)
        return self._json


class UnreadableJson(json.JSONDecodeError):
    """A body json.loads gave up on for another reason than its syntax (unreadable_json).

    A JSONDecodeError because FastAPI answers that with its 422 (json_invalid)
    and any other error while it reads a body with a bare 400 `http_error`;
    api.errors tells the two apart by the cause, as this has no line and column.
    """


def _standard_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError) as exc:
        raise UnreadableJson(unreadable_json(exc), "", 0) from exc


def unreadable_json(exc: RecursionError | ValueError) -> str:
    """Why json.loads could not read a text, other than broken syntax, for a sentence."""
    if isinstance(exc, RecursionError):
        return "it nests arrays or objects too deeply"
    if isinstance(exc, UnicodeDecodeError):  # bytes in another charset than UTF-8
        return f"it is not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
    if "int_max_str_digits" in str(exc):  # Python's guard against quadratic int parsing
        return f"it holds an integer of more than {sys.get_int_max_str_digits()} digits"
    return str(exc).rstrip(".")


class ContentTypeRoute(APIRoute):
    """An APIRoute that hands multipart/form-data requests to its endpoint's upload variant."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        upload_endpoint = getattr(endpoint, _VARIANT, None)
        self.upload_route: APIRoute | None = None
        if upload_endpoint is not None:
            self.upload_route = APIRoute(
                path,
                upload_endpoint,
                methods=kwargs.get("methods"),
                status_code=kwargs.get("status_code"),
                responses=kwargs.get("responses"),
                include_in_schema=False,
            )
            kwargs["openapi_extra"] = _with_form_body(
                kwargs.get("openapi_extra"), self.upload_route
            )
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        json_handler = super().get_route_handler()
        upload_route = getattr(self, "upload_route", None)
        upload_handler = upload_route.get_route_handler() if upload_route else None

        async def handler(request: Request) -> Response:
            if upload_handler is not None and is_multipart(request):
                return await upload_handler(request)
            return await json_handler(FastJsonRequest(request.scope, request.receive))

        return handler


def _with_form_body(extra: dict[str, Any] | None, upload_route: APIRoute) -> dict[str, Any]:
    assert upload_route.body_field is not None, "an upload variant needs form fields"
    schema = TypeAdapter(upload_route.body_field.field_info.annotation).json_schema()
    # Inline on purpose: a nested model would need a component of its own.
    assert "$defs" not in schema, "upload form fields must be plain values and files"
    schema.pop("title", None)
    extra = dict(extra or {})
    request_body = dict(extra.get("requestBody", {}))
    request_body["content"] = {**request_body.get("content", {}), MULTIPART: {"schema": schema}}
    extra["requestBody"] = request_body
    return extra
