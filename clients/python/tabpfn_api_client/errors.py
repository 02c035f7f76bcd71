"""Typed errors: each carries the service's stable `code`, its `detail` and the HTTP status."""

from __future__ import annotations

from typing import Any


class TabPFNAPIError(Exception):
    """Base of every error this client raises.

    `code` is the service's stable code (e.g. `validation_error`), `detail` its
    human sentence, `status_code` the HTTP status (None when no response came),
    `body` the whole error response (it may hold more, e.g. `errors`).
    """

    def __init__(
        self,
        detail: str,
        *,
        code: str = "error",
        status_code: int | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.status_code = status_code
        self.body = body or {}

    def __str__(self) -> str:
        where = f", HTTP {self.status_code}" if self.status_code else ""
        return f"{self.detail} ({self.code}{where})"


class APIConnectionError(TabPFNAPIError):
    """No answer came (after retries): the service could not be reached (`reached` is
    False), or it was and the connection broke or timed out before its answer."""

    reached: bool = False


class AuthenticationError(TabPFNAPIError):
    """401: a missing, wrong or revoked API key (`unauthorized`), or a TabPFN token
    that TabPFN refused at setup (`upstream_auth_failed`)."""


class NotFoundError(TabPFNAPIError):
    """404: no such job or model for this API key (`not_found`, `model_not_found`)."""


class ConflictError(TabPFNAPIError):
    """409: e.g. `idempotency_conflict`, `result_not_available`, `job_already_finished`,
    `job_not_finished`."""


class PayloadTooLargeError(TabPFNAPIError):
    """413: the request body is over the service's limit."""


class ValidationError(TabPFNAPIError):
    """422: the service refused the request's data or options (`validation_error`,
    `limit_exceeded`, `callback_url_forbidden`, ...). Also raised client-side for
    data that cannot be sent (e.g. infinite values)."""


class RateLimitedError(TabPFNAPIError):
    """429 after the client's retries; `retry_after` is in seconds when the service said."""

    def __init__(self, detail: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.retry_after = retry_after


class ServiceUnavailableError(TabPFNAPIError):
    """502/503/504 after the client's retries (`service_unavailable`, `upstream_unavailable`)."""


class ServerError(TabPFNAPIError):
    """Any other 5xx (`internal_error`)."""


class JobFailedError(TabPFNAPIError):
    """A job ended `failed` (or `canceled`): `code` is the job's `error.code`, `job` the job."""

    def __init__(self, detail: str, *, job: dict[str, Any], code: str) -> None:
        super().__init__(detail, code=code, body=job)
        self.job = job
        self.job_id: str = job["id"]

    def __str__(self) -> str:
        return f"job {self.job_id} {self.job.get('status', 'failed')}: {self.detail} ({self.code})"


class JobCanceledError(JobFailedError):
    """The job was canceled (`code` is `canceled`)."""


class JobTimeoutError(TabPFNAPIError, TimeoutError):
    """`wait(timeout=...)` ran out; the job goes on (cancel it if you no longer need it)."""


_BY_STATUS: dict[int, type[TabPFNAPIError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    504: ServiceUnavailableError,
}


def error_from_response(
    status_code: int, body: Any, text: str, retry_after: float | None = None
) -> TabPFNAPIError:
    """The typed error for an error response (`{"detail", "code"}`, or anything else)."""
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        detail, code = body["detail"], str(body.get("code") or "http_error")
    else:
        detail = text.strip()[:500] or f"HTTP {status_code}"
        code = "http_error"
        body = {}
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else TabPFNAPIError
    if cls is RateLimitedError:
        return RateLimitedError(
            detail, retry_after=retry_after, code=code, status_code=status_code, body=body
        )
    return cls(detail, code=code, status_code=status_code, body=body)
