"""Domain errors: each carries its HTTP status and a stable code.

Services raise these; one exception handler in the API turns them into
`{"detail", "code"}`. The worker stores `code` and `message` on the failed job.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class ValidationFailed(ServiceError):
    status_code = 422
    code = "validation_error"


class LimitExceeded(ValidationFailed):
    """Data the upstream's published limits would refuse, caught before queueing."""

    code = "limit_exceeded"


class NumberOutOfRange(ValidationFailed):
    """A number TabPFN cannot take: infinite, or past float32's range (±3.4e38)."""

    code = "number_out_of_range"


class UnsupportedFile(ValidationFailed):
    """An upload that is neither CSV nor Parquet."""

    code = "unsupported_file"


class FileFormatMismatch(ValidationFailed):
    """An upload whose name says one format and whose content is another."""

    code = "file_format_mismatch"


class CallbackUrlForbidden(ValidationFailed):
    """A callback URL that is not a public http(s) address (SSRF protection)."""

    code = "callback_url_forbidden"


class CallbackUrlUnresolvable(ValidationFailed):
    code = "callback_url_unresolvable"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


# What every refused API key is told, whatever the reason (unknown, revoked, its
# account deleted): the answer must not help a guesser tell them apart.
INVALID_API_KEY = "The API key is not valid."


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class ResultExpired(NotFound):
    """A succeeded job's result, deleted by retention while the job stays: told apart
    from a job that is gone by the code that reads both, answered as `not_found`."""


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class LastActiveKey(Conflict):
    code = "last_active_key"


class ResultNotAvailable(Conflict):
    code = "result_not_available"


class JobCanceled(Conflict):
    code = "canceled"


class JobAlreadyFinished(Conflict):
    code = "job_already_finished"


class JobNotFinished(Conflict):
    """A delete of a job that is still queued or running: it is canceled first."""

    code = "job_not_finished"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class TabpfnTokenInUse(Conflict):
    """A TabPFN token that already belongs to another account of this service."""

    code = "tabpfn_token_in_use"


class RateLimited(ServiceError):
    status_code = 429
    code = "rate_limited"


class UpstreamAuthFailed(ServiceError):
    status_code = 401
    code = "upstream_auth_failed"


class UpstreamQuotaExceeded(ServiceError):
    status_code = 429
    code = "upstream_quota_exceeded"


class UpstreamUnavailable(ServiceError):
    status_code = 503
    code = "upstream_unavailable"


class UpstreamError(ServiceError):
    status_code = 502
    code = "upstream_error"


class ServiceUnavailable(ServiceError):
    status_code = 503
    code = "service_unavailable"


# Codes only stored on failed jobs (never an HTTP answer of their own): their
# status_code is what the job's error would be as an HTTP error.


class WorkerLost(ServiceError):
    """A job whose runs lost their worker on each of its MAX_ATTEMPTS attempts."""

    code = "worker_lost"


class TimeLimitExceeded(ServiceError):
    """A job still running RUNNING_TIMEOUT_S after its claim."""

    status_code = 504
    code = "time_limit_exceeded"
