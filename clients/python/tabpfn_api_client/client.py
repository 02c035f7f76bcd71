"""The HTTP client: submit jobs, wait for them, read results; retries and typed errors."""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import functools
import math
import os
import random
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx

from ._json import dumps
from ._version import __version__
from .errors import (
    APIConnectionError,
    AuthenticationError,
    ConflictError,
    JobCanceledError,
    JobFailedError,
    JobTimeoutError,
    TabPFNAPIError,
    ValidationError,
    error_from_response,
)

DEFAULT_API_URL = "http://127.0.0.1:8000"
FINISHED = ("succeeded", "failed", "canceled")
# The service caps a long-poll at 60 s.
MAX_LONG_POLL_S = 60
# A long-poll answers when the job ends, not when its stage changes: a caller
# that shows progress asks this often, so "fitting" shows while it fits.
PROGRESS_POLL_S = 2
_RETRY_STATUSES = (429, 502, 503, 504)
# Never sleep longer than this for one Retry-After (the rate limit window is a minute).
_MAX_RETRY_AFTER_S = 60.0


def _api_base(api_url: str) -> str:
    url = api_url.rstrip("/")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        # httpx would read "localhost:8000" as a scheme and fail on every request with a
        # message about the transport, far from the cause.
        raise ValidationError(
            f"The service URL {api_url!r} does not start with http:// or https:// "
            "(e.g. http://127.0.0.1:8000): check --api-url or API_URL.",
            code="validation_error",
        )
    return url if url.endswith("/api/v1") else f"{url}/api/v1"


# Failures that mean the request never left: nothing was done, and a retry is safe.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _transport_failure(api_url: str, exc: httpx.TransportError, may_have_arrived: bool) -> str:
    """What a request that got no answer says: why, and whether one of its attempts may
    have been carried out (a submit's job may then exist: list_jobs, `jobs` in the CLI)."""
    if isinstance(exc, _NEVER_SENT):
        why = f"Cannot reach {api_url}: {type(exc).__name__}: {exc}"
    elif isinstance(exc, httpx.TimeoutException):
        why = f"{api_url} did not answer in time ({type(exc).__name__})"
    else:
        why = f"The connection to {api_url} broke: {type(exc).__name__}: {exc}"
    if may_have_arrived:
        why += "; an attempt may have reached the service and been carried out"
    return why


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every Client of the process, built at the first Client.

    httpx builds a context per client by default, loading the CA bundle each
    time: about 20 ms per Client, paid again by every estimator clone (a
    cross-validation fold, a grid-search candidate). Built with httpx's own
    defaults, so SSL_CERT_FILE and SSL_CERT_DIR are honoured as before (as they
    were set when the first Client was made).
    """
    return httpx.create_ssl_context()


def _not_found(response: httpx.Response) -> bool:
    """The service's own 404 for a job or model (not a proxy's page)."""
    if response.status_code != 404:
        return False
    try:
        return response.json().get("code") in ("not_found", "model_not_found")
    except (ValueError, AttributeError):
        return False


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Job:
    """A handle on one job: its latest state in `data`, and ways to wait and fetch the result."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self._client = client
        # A submit that waited (`wait=`) answers with the ended job and its result.
        self._result: dict[str, Any] | None = data.pop("result", None)
        self.data = data

    def __repr__(self) -> str:
        stage = f" ({self.stage})" if self.stage else ""
        return f"<Job {self.id} {self.type} {self.status}{stage}>"

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def type(self) -> str:
        return self.data["type"]

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def stage(self) -> str | None:
        return self.data.get("stage")

    @property
    def waiting(self) -> dict[str, Any] | None:
        """Why a queued job has not started: `{"reason", "until"}`, else None.

        Reasons: capacity, fair_share, upstream_rate_limit, retry_backoff.
        """
        return self.data.get("waiting")

    @property
    def model_id(self) -> str | None:
        return self.data.get("model_id")

    @property
    def metadata(self) -> dict[str, str] | None:
        """Your labels: from the submit (`metadata=`) or as changed since, or None."""
        return self.data.get("metadata")

    @property
    def error(self) -> dict[str, str] | None:
        return self.data.get("error")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def refresh(self) -> Job:
        self.data = self._client._get_job_data(self.id)
        return self

    def wait(
        self,
        timeout: float | None = None,
        *,
        on_update: Callable[[Job], None] | None = None,
        raise_on_failure: bool = True,
    ) -> Job:
        """Block until the job has finished; returns this job (now succeeded).

        Uses the long-poll `GET /jobs/{id}?wait=S`, which the service answers when
        the job ends or S seconds have passed, asking again until the job ends.
        `on_update` is called with the job after every answer; with it, each
        long-poll lasts at most PROGRESS_POLL_S, so a job's state and stage
        (queued, then running: fitting, predicting) show as they change. A
        failed or canceled job raises `JobFailedError` (`JobCanceledError`) with
        the job's error code, unless `raise_on_failure` is false. `timeout`
        (seconds) raises `JobTimeoutError`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.2
        if on_update is not None:
            on_update(self)
        while not self.finished:
            left = MAX_LONG_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise JobTimeoutError(
                    f"Job {self.id} did not finish within {timeout} s (it is {self.status}).",
                    code="timeout",
                    body={"job_id": self.id, "status": self.status},
                )
            longest = MAX_LONG_POLL_S if on_update is None else PROGRESS_POLL_S
            wait_s = max(1, min(longest, math.ceil(left)))
            before = (self.status, self.stage)
            started = time.monotonic()
            self.data = self._client._get_job_data(self.id, wait=wait_s)
            if on_update is not None:
                on_update(self)
            if self.finished:
                break
            # An answer that came back at once with nothing new means the server did not
            # hold the request: pause, growing gently, so we never spin on it.
            if (self.status, self.stage) == before and time.monotonic() - started < 1:
                time.sleep(pause)
                pause = min(pause * 1.5, 2.0)
            else:
                pause = 0.2
        if raise_on_failure:
            self._raise_if_unsuccessful()
        return self

    def _raise_if_unsuccessful(self) -> None:
        if self.status == "succeeded":
            return
        error = self.error or {"code": self.status, "message": f"The job was {self.status}."}
        cls = JobCanceledError if self.status == "canceled" else JobFailedError
        raise cls(error.get("message") or self.status, job=self.data, code=error["code"])

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The job's result, waiting for it first if needed (see `wait`); a submit
        that waited for its job already holds it."""
        self.wait(timeout)
        if self._result is not None:
            return self._result
        return self._client._request("GET", f"/jobs/{self.id}/result")

    def update(self, *, metadata: dict[str, str | None] | None) -> Job:
        """Change this job's labels (`Client.update_job`); the handle shows the result."""
        self.data = self._client.update_job(self.id, metadata=metadata).data
        return self

    def cancel(self) -> Job:
        """Cancel the job; a job that had already finished is left as it was."""
        try:
            self.data = self._client._request("POST", f"/jobs/{self.id}/cancel", retry=True)
        except ConflictError as exc:
            if exc.code != "job_already_finished":
                raise
            self.refresh()
        return self


class Client:
    """A client of the TabPFN API.

    >>> client = Client("http://127.0.0.1:8000")
    >>> account = client.setup("demo-token")        # keeps account["api_key"]
    >>> model = client.fit(X, y).wait().model_id
    >>> client.predict(model, X_test).result()["predictions"]

    `api_url` defaults to `API_URL` from the environment, `api_key` to
    `TABPFN_API_KEY`. `timeout` is per HTTP request (seconds); connection
    errors, 429, 502, 503 and 504 are retried up to `max_retries` times with
    exponential backoff, honouring `Retry-After`. Every submit carries an
    `Idempotency-Key`, the same across its retries, so a retry never makes a
    second job.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = (api_url or os.environ.get("API_URL") or DEFAULT_API_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("TABPFN_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._http = httpx.Client(
            base_url=_api_base(self.api_url),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": f"tabpfn-api-client/{__version__}"},
            verify=_tls_context(),
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.api_url!r})"

    # -- transport ---------------------------------------------------------

    def _sleep_before_retry(self, attempt: int, retry_after: float | None) -> None:
        if retry_after is not None:
            # Up to a second more than asked: the clients a rate window held back all
            # come back together otherwise, and meet the next window's limit at once.
            delay = min(retry_after, _MAX_RETRY_AFTER_S) + random.uniform(0, 1)
        else:
            delay = min(self.backoff_s * 2**attempt, 10.0)
            delay *= random.uniform(0.8, 1.2)
        time.sleep(delay)

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        retry: bool | None = None,
        auth: bool = True,
        timeout: float | None = None,
        links: dict[str, Any] | None = None,
        upload: Upload | None = None,
        gone_after_retry: bool = False,
    ) -> Any:
        """One API call with retries; returns the decoded JSON (None for 204), and fills
        `links`, if given, with the answer's `Link` header by relation (httpx's `links`).
        `upload`: a multipart form of text fields and files, read from the start again
        by every attempt. `gone_after_retry`: a delete, whose retry that meets a 404
        after an attempt that may have arrived is its own success, not an error.

        `retry` says whether a request that may have reached the server can be sent
        again (GETs, and submits with an Idempotency-Key); requests that surely did
        not (connect errors, 429, 503) are always retried.
        """
        retry = method == "GET" if retry is None else retry
        all_headers = dict(headers or {})
        if auth:
            if not self.api_key:
                raise AuthenticationError(
                    "No API key: pass api_key=, set TABPFN_API_KEY, or call setup() first.",
                    code="unauthorized",
                )
            all_headers["Authorization"] = f"Bearer {self.api_key}"
        content = None
        if body is not None:
            content = dumps(body)
            all_headers["Content-Type"] = "application/json"
        request_timeout = None
        if timeout is not None:
            request_timeout = httpx.Timeout(timeout, connect=min(self.timeout, 10.0))
        attempt = 0
        may_have_arrived = False  # an earlier attempt whose answer did not come back
        while True:
            try:
                with contextlib.ExitStack() as files:
                    response = self._http.request(
                        method,
                        path,
                        content=content,
                        data=upload.fields if upload else None,
                        files=upload.open(files) if upload else None,
                        params=params,
                        headers=all_headers,
                        timeout=request_timeout or httpx.USE_CLIENT_DEFAULT,
                    )
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, _NEVER_SENT)
                may_have_arrived = may_have_arrived or not never_sent
                if attempt < self.max_retries and (retry or never_sent):
                    self._sleep_before_retry(attempt, None)
                    attempt += 1
                    continue
                failure = APIConnectionError(
                    _transport_failure(self.api_url, exc, method != "GET" and may_have_arrived),
                    code="connection_error",
                )
                failure.reached = may_have_arrived
                raise failure from exc
            # 429 and 503 are refusals before any work; 502/504 may hide a request
            # that ran, so those are retried only when a repeat is safe.
            if (
                response.status_code in _RETRY_STATUSES
                and attempt < self.max_retries
                and (retry or response.status_code in (429, 503))
            ):
                may_have_arrived = may_have_arrived or response.status_code in (502, 504)
                self._sleep_before_retry(attempt, _retry_after(response))
                attempt += 1
                continue
            if gone_after_retry and may_have_arrived and _not_found(response):
                return None  # an earlier attempt deleted it; only its answer was lost
            if response.is_success:
                if links is not None:
                    links.update(response.links)
                if response.status_code == 204 or not response.content:
                    return None
                try:
                    return response.json()
                except ValueError as exc:  # another server at this URL, or a proxy's page
                    raise TabPFNAPIError(
                        f"{self.api_url} answered {method} {path} with "
                        f"{response.headers.get('content-type', 'no content type')}, not JSON: "
                        "is it the TabPFN API? Check --api-url or API_URL.",
                        code="unexpected_response",
                        status_code=response.status_code,
                    ) from exc
            try:
                payload = response.json()
            except ValueError:
                payload = None
            raise error_from_response(
                response.status_code, payload, response.text, _retry_after(response)
            )

    def _submit(
        self,
        path: str,
        body: dict[str, Any] | Upload,
        idempotency_key: str | None,
        wait: float | None,
    ) -> Job:
        """POST a job, JSON or an upload (retry-safe with its Idempotency-Key). With
        `wait`, the service holds the answer until the job ends (`?wait=S`, at most its
        MAX_WAIT_S): the job comes back finished, with its result, in the one request."""
        key = idempotency_key or str(uuid.uuid4())
        upload = body if isinstance(body, Upload) else None
        data = self._request(
            "POST",
            path,
            body=None if upload else body,
            upload=upload,
            headers={"Idempotency-Key": key},
            params={"wait": wait} if wait else None,
            retry=True,
            timeout=wait + self.timeout if wait else None,
        )
        return Job(self, data)

    def _get_job_data(self, job_id: str, wait: float | None = None) -> dict[str, Any]:
        if wait is None:
            return self._request("GET", f"/jobs/{job_id}")
        return self._request(
            "GET", f"/jobs/{job_id}", params={"wait": wait}, timeout=wait + self.timeout
        )

    # -- account -----------------------------------------------------------

    def setup(self, tabpfn_token: str) -> dict[str, Any]:
        """Register a TabPFN token; returns `{api_key, key_id, user_id, webhook_secret, account}`.

        `account` is "existing" when the token already had an account (a new key for it:
        how a lost key is recovered), "new" otherwise.

        The client keeps the new API key. The key and the webhook secret are shown
        only this once: store them.
        """
        account = self._request(
            "POST", "/auth/setup", body={"tabpfn_token": tabpfn_token}, auth=False, retry=False
        )
        self.api_key = account["api_key"]
        return account

    def replace_token(self, tabpfn_token: str) -> None:
        """Replace the TabPFN token your account's jobs run with (a new or rotated one).

        TabPFN verifies it first. The account, its API keys, models and jobs stay;
        jobs that run from now on use the new token. (`setup()` with a new token
        would make a new, empty account instead: accounts are found by their token.)
        """
        self._request("PUT", "/auth/tabpfn-token", body={"tabpfn_token": tabpfn_token})

    def me(self) -> dict[str, Any]:
        return self._request("GET", "/auth/me")

    def create_key(self, name: str | None = None) -> dict[str, Any]:
        """Another API key for your account: `{api_key, key_id, name}`. The key is shown
        only this once; `name` labels it ("nightly-etl") in `list_keys()`."""
        return self._request("POST", "/auth/keys", body={"name": name} if name else {})

    def list_keys(self) -> list[dict[str, Any]]:
        """Your API keys (`id`, `name`, `created_at`, `last_used_at`, `revoked_at`),
        never the keys themselves."""
        return self._request("GET", "/auth/keys")

    def revoke_key(self, key_id: str) -> None:
        """Revoke a key at once (not your last active one)."""
        self._request("DELETE", f"/auth/keys/{key_id}")

    def delete_account(self) -> None:
        """Delete your account here, at once and for good: its API keys (this client's
        included), the stored TabPFN token, every job, result and model. Unfinished
        jobs stop. The models' copies in your TabPFN account are deleted too, best
        effort. Not retried: a repeat after a lost answer would meet a deleted key.
        """
        self._request("DELETE", "/auth/me", retry=False)
        self.api_key = None

    def usage(self) -> dict[str, Any]:
        """Your TabPFN account's usage: `current_usage`, `usage_limit`, `reset_time`."""
        return self._request("GET", "/usage")

    # -- jobs --------------------------------------------------------------

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        task: str = "classification",
        options: dict[str, Any] | None = None,
        columns: Sequence[str] | None = None,
        callback_url: str | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> Job:
        """Submit a fit job. `X`: DataFrame, 2-D array, list of rows or of records.

        `metadata`: your own labels for the job (`{"order": "A-17"}`, up to 16 pairs of
        text), returned with it, sent in its webhook, and a filter of `list_jobs`.

        `wait` (seconds, at most the service's MAX_WAIT_S): the submit itself waits
        for the job to end, so a job that ends in time comes back finished with its
        result, in one request; one that does not comes back as usual (then `wait()`).
        The same for `predict` and `fit_predict`."""
        body = {
            "task": task,
            "train": _train(X, y, columns),
            **_extras(options, callback_url, metadata),
        }
        return self._submit("/jobs/fit", body, idempotency_key, wait)

    def predict(
        self,
        model_id: str,
        X: Any,
        *,
        output: str | None = None,
        quantiles: Sequence[float] | None = None,
        columns: Sequence[str] | None = None,
        callback_url: str | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> Job:
        """Submit a predict job with a fitted model. `output`: labels | probabilities
        (classification), mean | median | quantiles (regression); default labels/mean."""
        body = {
            "model_id": str(model_id),
            **_table(X, columns),
            **_extras(None, callback_url, metadata, output, quantiles),
        }
        return self._submit("/jobs/predict", body, idempotency_key, wait)

    def fit_predict(
        self,
        X: Any,
        y: Any,
        X_test: Any,
        *,
        task: str = "classification",
        options: dict[str, Any] | None = None,
        output: str | None = None,
        quantiles: Sequence[float] | None = None,
        callback_url: str | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> Job:
        """Submit one job that fits on (X, y) and predicts X_test."""
        body = {
            "task": task,
            "train": _train(X, y, None),
            "test": _table(X_test, None),
            **_extras(options, callback_url, metadata, output, quantiles),
        }
        return self._submit("/jobs/fit-predict", body, idempotency_key, wait)

    # -- files, uploaded as they are ------------------------------------------

    def fit_file(
        self,
        path: str | os.PathLike[str],
        *,
        target: str,
        task: str = "classification",
        options: dict[str, Any] | None = None,
        callback_url: str | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> Job:
        """Submit a fit job from a CSV or Parquet file, uploaded as it is: `target` is
        its column to predict. Files may be up to the service's MAX_UPLOAD_BYTES (500 MB
        by default) where JSON stops at MAX_REQUEST_BYTES, and are streamed from disk;
        the service reads them (CSV: UTF-8, comma-separated, a header row)."""
        fields = {"task": task, "target": target, **_form(options, callback_url, metadata)}
        upload = Upload(fields, {"file": path})
        return self._submit("/jobs/fit", upload, idempotency_key, wait)

    def predict_file(
        self,
        model_id: str,
        path: str | os.PathLike[str],
        *,
        output: str | None = None,
        quantiles: Sequence[float] | None = None,
        callback_url: str | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> Job:
        """Submit a predict job from a CSV or Parquet file, uploaded as it is: its
        columns are the model's, by name, in any order (others are refused)."""
        fields = {
            "model_id": str(model_id),
            **_form(None, callback_url, metadata, output, quantiles),
        }
        upload = Upload(fields, {"file": path})
        return self._submit("/jobs/predict", upload, idempotency_key, wait)

    def fit_predict_files(
        self,
        train_path: str | os.PathLike[str],
        test_path: str | os.PathLike[str],
        *,
        target: str,
        task: str = "classification",
        options: dict[str, Any] | None = None,
        output: str | None = None,
        quantiles: Sequence[float] | None = None,
        callback_url: str | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> Job:
        """Submit one job that fits on a file and predicts another, both uploaded as they
        are: `target` is the train file's column to predict; the test file has the
        other columns."""
        fields = {
            "task": task,
            "target": target,
            **_form(options, callback_url, metadata, output, quantiles),
        }
        upload = Upload(fields, {"train_file": train_path, "test_file": test_path})
        return self._submit("/jobs/fit-predict", upload, idempotency_key, wait)

    def get_job(self, job_id: str) -> Job:
        return Job(self, self._get_job_data(str(job_id)))

    def list_jobs(
        self,
        *,
        limit: int = 50,
        status: str | None = None,
        type: str | None = None,
        before: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> list[Job]:
        """One page of your jobs, newest first; pass the last job's id as `before` for more
        (`iter_jobs` pages by the service's cursor, which holds even if you delete the jobs
        as you go).
        `metadata`: only jobs whose metadata holds every one of these pairs."""
        page = self._jobs_page(status, type, metadata, limit, before)
        return [Job(self, j) for j in page["jobs"]]

    def iter_jobs(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        metadata: dict[str, str] | None = None,
        page_size: int = 200,
    ) -> Iterator[Job]:
        """All your jobs (those with `metadata`'s pairs), newest first, `page_size` (at
        most 200) a request; the service's cursor holds even if you delete them as you go."""
        before = None
        while True:
            page = self._jobs_page(status, type, metadata, page_size, before)
            for data in page["jobs"]:
                yield Job(self, data)
            before = page.get("next_cursor")
            if not before:
                return

    def _jobs_page(
        self,
        status: str | None,
        type: str | None,
        metadata: dict[str, str] | None,
        limit: int,
        before: str | None,
    ) -> dict[str, Any]:
        """One `GET /jobs` answer; metadata as repeated `metadata=key:value`."""
        params: dict[str, Any] = {"limit": limit}
        for name, value in (("status", status), ("type", type), ("before", before)):
            if value is not None:
                params[name] = value
        if metadata:
            params["metadata"] = _filters(metadata)
        return self._request("GET", "/jobs", params=params)

    def update_job(self, job_id: str, *, metadata: dict[str, str | None] | None) -> Job:
        """Change a job's labels, at any point of its life: pairs given text are set,
        pairs given None removed (a JSON Merge Patch); `metadata=None` removes them all.
        The labels that result keep the submit's limits (`ValidationError` otherwise,
        and nothing changes)."""
        # Retried: the same merge twice leaves the labels as once.
        data = self._request("PATCH", f"/jobs/{job_id}", body={"metadata": metadata}, retry=True)
        return Job(self, data)

    def cancel_job(self, job_id: str) -> Job:
        return Job(self, {"id": str(job_id), "status": "unknown", "type": "unknown"}).cancel()

    def delete_job(self, job_id: str) -> None:
        """Delete a finished job now: its data, result, webhook log and idempotency key
        (a fit's model stays). A queued or running job raises `ConflictError`
        (`job_not_finished`): cancel it first. A job that is not there raises
        `NotFoundError`, unless an earlier attempt of this call may have deleted it
        (its answer lost): then the retry's 404 is this call's success."""
        self._request("DELETE", f"/jobs/{job_id}", retry=True, gone_after_retry=True)

    # -- models ------------------------------------------------------------

    def list_models(
        self,
        *,
        limit: int | None = None,
        before: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Your fitted models, newest first: all of them, or `limit` (at most 1,000)
        after the model `before` (the last id of the previous page).
        `metadata`: only models whose metadata holds every one of these pairs."""
        params: dict[str, Any] = {
            k: v for k, v in (("limit", limit), ("before", before)) if v is not None
        }
        if metadata:
            params["metadata"] = _filters(metadata)
        return self._request("GET", "/models", params=params or None)

    def iter_models(
        self, *, metadata: dict[str, str] | None = None, page_size: int = 200
    ) -> Iterator[dict[str, Any]]:
        """All your fitted models (those with `metadata`'s pairs), newest first,
        `page_size` (at most 1,000) a request, following each page's `Link` header, whose
        cursor holds even if you delete the models as you go."""
        params: dict[str, Any] | list[tuple[str, str]] = {"limit": page_size}
        if metadata:
            params["metadata"] = _filters(metadata)
        while True:
            links: dict[str, Any] = {}
            page = self._request("GET", "/models", params=params, links=links)
            yield from page
            following = links.get("next")
            if not following:
                return
            # Pairs, not a dict: the link repeats `metadata` once per filter.
            params = urllib.parse.parse_qsl(urllib.parse.urlsplit(following["url"]).query)

    def update_model(
        self, model_id: str, *, metadata: dict[str, str | None] | None
    ) -> dict[str, Any]:
        """Change a model's labels (it starts with its fit job's): pairs given text are
        set, pairs given None removed; `metadata=None` removes them all."""
        body = {"metadata": metadata}
        return self._request("PATCH", f"/models/{model_id}", body=body, retry=True)

    def get_model(self, model_id: str) -> dict[str, Any]:
        return self._request("GET", f"/models/{model_id}")

    def delete_model(self, model_id: str) -> None:
        """Delete a model, here and in your TabPFN account; retried as `delete_job`."""
        self._request("DELETE", f"/models/{model_id}", retry=True, gone_after_retry=True)


@dataclasses.dataclass(frozen=True)
class Upload:
    """A multipart form: text fields, and files by field name and path."""

    fields: dict[str, Any]
    paths: dict[str, str | os.PathLike[str]]

    def open(self, files: contextlib.ExitStack) -> dict[str, tuple[str, Any]]:
        """The files opened from their start (closed with `files`), named as on disk:
        the service checks a name's extension against the content."""
        opened = {}
        for field, path in self.paths.items():
            try:
                handle = files.enter_context(open(path, "rb"))  # noqa: SIM115 (the stack closes it)
            except OSError as exc:
                raise ValidationError(f"{path}: {exc.strerror}.", code="validation_error") from exc
            opened[field] = (os.path.basename(path), handle)
        return opened


def _extras(
    options: dict[str, Any] | None,
    callback_url: str | None,
    metadata: dict[str, str] | None,
    output: str | None = None,
    quantiles: Sequence[float] | None = None,
) -> dict[str, Any]:
    """A submit's optional fields, those given (a JSON body's and an upload's alike)."""
    fields: dict[str, Any] = {}
    if options:
        fields["options"] = options
    if quantiles is not None and output is None:
        output = "quantiles"
    if output is not None:
        fields["output"] = output
    if quantiles is not None:
        fields["quantiles"] = [float(q) for q in quantiles]
    if callback_url:
        fields["callback_url"] = callback_url
    if metadata:
        fields["metadata"] = metadata
    return fields


def _form(*extras: Any) -> dict[str, str]:
    """An upload's optional fields (`_extras`), each one text: objects and lists as JSON."""
    fields = _extras(*extras)
    return {k: v if isinstance(v, str) else dumps(v).decode() for k, v in fields.items()}


def _filters(metadata: dict[str, str]) -> list[str]:
    """A list's `metadata` filter as the repeated `key:value` parameters it is sent as."""
    return [f"{key}:{value}" for key, value in metadata.items()]


def _table(X: Any, columns: Sequence[str] | None) -> dict[str, Any]:
    """A table as the service takes it: its rows, and its column names when known."""
    # numpy and pandas are imported by the first table sent, not with the package (_data.py).
    from ._data import to_rows

    rows, names = to_rows(X, columns)
    return {"X": rows} if names is None else {"X": rows, "columns": names}


def _train(X: Any, y: Any, columns: Sequence[str] | None) -> dict[str, Any]:
    from ._data import to_labels

    return {**_table(X, columns), "y": to_labels(y)}
