"""Error bodies in the cloud's shape: JSON with a `message`, which the client prints."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        body: BaseModel | dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, body)
        self.status_code = status_code
        self.headers = headers
        self.body = body if isinstance(body, dict) else body.model_dump(mode="json")
        # The client prints "[HTTP <code>] <message>." itself; avoid a doubled period.
        if isinstance(self.body.get("message"), str):
            self.body["message"] = self.body["message"].rstrip(".")

    @classmethod
    def message(cls, status_code: int, message: str, **extra: Any) -> ApiError:
        return cls(status_code, {"message": message, **extra})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors())
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", []))
        return JSONResponse(
            {"message": f"Invalid request: {where}: {first.get('msg', '')}", "errors": errors},
            status_code=422,
        )
