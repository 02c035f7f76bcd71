"""Python client of the TabPFN API: jobs over HTTP, scikit-learn estimators, webhook checks."""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .client import Client, Job
from .errors import (
    APIConnectionError,
    AuthenticationError,
    ConflictError,
    JobCanceledError,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    TabPFNAPIError,
    ValidationError,
)
from .webhooks import WebhookVerificationError, sign_webhook, verify_webhook

_ESTIMATORS = ("RemoteTabPFNClassifier", "RemoteTabPFNRegressor")


def __getattr__(name: str) -> Any:
    # The estimators need scikit-learn (the [sklearn] extra): import it only when asked.
    if name in _ESTIMATORS:
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "APIConnectionError",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "Job",
    "JobCanceledError",
    "JobFailedError",
    "JobTimeoutError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RemoteTabPFNClassifier",
    "RemoteTabPFNRegressor",
    "ServerError",
    "ServiceUnavailableError",
    "TabPFNAPIError",
    "ValidationError",
    "WebhookVerificationError",
    "__version__",
    "sign_webhook",
    "verify_webhook",
]
