"""The service side: what a client of the HTTP API does, timed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import httpx

from bench.data import Table, fit_body, fit_predict_body

FINISHED = ("succeeded", "failed", "canceled")


@dataclass
class JobTiming:
    """One job seen from the client, and the server-side timestamps that split it.

    The split needs the job's own timestamps, which the result does not carry:
    `ServiceUser.add_server_times` reads them afterwards, outside the timed work.
    """

    job_id: str
    total_s: float
    submit_s: float  # POST until 202
    submitted_wall: float  # time.time() at the 202
    answered_wall: float  # time.time() when the result arrived
    queue_s: float = float("nan")  # 202 at the client → started_at (broker, pickup, claim)
    run_s: float = float("nan")  # started_at → finished_at (the worker's whole run)
    notify_s: float = float("nan")  # finished_at → the result reached the client

    @classmethod
    def answered_now(
        cls, job_id: str, started: float, submit_s: float, submitted_wall: float
    ) -> JobTiming:
        """A job whose result reached the client just now (`started`: perf_counter() at
        its POST)."""
        answered_wall, total_s = time.time(), time.perf_counter() - started
        return cls(
            job_id=job_id,
            total_s=total_s,
            submit_s=submit_s,
            submitted_wall=submitted_wall,
            answered_wall=answered_wall,
        )

    def split(self, started_at: float, finished_at: float) -> None:
        """Set queue, run and notify from the job's started_at and finished_at (epoch s).

        Same machine, same clock: PostgreSQL's now() against the client's time.time()."""
        self.queue_s = started_at - self.submitted_wall
        self.run_s = finished_at - started_at
        self.notify_s = self.answered_wall - finished_at


# httpx builds an SSL context for every new Client unless given one: ~36 ms of CPU,
# which each client thread of a timed run would pay at its start, and which no
# real client application pays more than once. Built once here (the API is plain
# HTTP; the context is only what httpx would otherwise build itself).
_TLS = httpx.create_ssl_context()


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


class ServiceUser:
    def __init__(self, api_url: str, api_key: str) -> None:
        self.base = f"{api_url}/api/v1"
        self.api_key = api_key
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self._local = threading.local()

    @classmethod
    def register(cls, api_url: str, token: str) -> ServiceUser:
        # bcrypt and the upstream check take seconds on a busy machine.
        response = httpx.post(
            f"{api_url}/api/v1/auth/setup", json={"tabpfn_token": token}, timeout=120
        )
        response.raise_for_status()
        return cls(api_url, response.json()["api_key"])

    def send(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One request, sent again once if a kept-alive connection was closed under it.

        The server may close an idle keep-alive connection just as the client
        reuses it (a reset before any answer). Only for GETs, which are safe to
        repeat; submits rely on the short keep-alive expiry below instead.
        """
        try:
            return self.http.request(method, path, **kwargs)
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
            return self.http.request(method, path, **kwargs)

    @property
    def http(self) -> httpx.Client:
        # One keep-alive connection per thread, as a client library would hold.
        if not hasattr(self._local, "client"):
            # uvicorn closes a connection idle for 5 s, httpx reuses one idle for up
            # to 5 s: the two race, and a submit sent on a closing connection is reset.
            # Dropping idle connections sooner on this side ends the race.
            self._local.client = httpx.Client(
                base_url=self.base,
                headers=self.headers,
                timeout=120,
                limits=httpx.Limits(keepalive_expiry=2.0),
                verify=_TLS,
            )
        return self._local.client

    def submit(self, path: str, body: dict) -> tuple[float, dict]:
        start = time.perf_counter()
        response = self.http.post(
            path, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        seconds = time.perf_counter() - start
        if response.status_code != 202:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
        return seconds, response.json()

    def _long_polls(self, job_id: str, path: str, timeout_s: float) -> Iterator[httpx.Response]:
        """`GET path?wait=30` again and again, until the caller stops or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() <= deadline:
            yield self.send("GET", path, params={"wait": 30})
        raise RuntimeError(f"job {job_id} did not finish in {timeout_s:.0f} s")

    def wait_for_result(self, job_id: str, timeout_s: float = 300) -> dict:
        """`GET /jobs/{id}/result?wait=30` until the result comes: one request per job."""
        for response in self._long_polls(job_id, f"/jobs/{job_id}/result", timeout_s):
            if response.status_code == 200:
                return response.json()
            answer = response.json()
            if response.status_code != 409 or answer.get("job_status") not in ("queued", "running"):
                raise RuntimeError(f"job {job_id}: {response.status_code} {response.text[:300]}")

    def add_server_times(self, timings: list[JobTiming]) -> None:
        """Split each timing with its job's started_at and finished_at (one GET per job)."""
        for timing in timings:
            job = self.send("GET", f"/jobs/{timing.job_id}").raise_for_status().json()
            timing.split(_ts(job["started_at"]), _ts(job["finished_at"]))

    def wait(self, job_id: str, timeout_s: float = 300) -> dict:
        for response in self._long_polls(job_id, f"/jobs/{job_id}", timeout_s):
            job = response.raise_for_status().json()
            if job["status"] in FINISHED:
                if job["status"] != "succeeded":
                    raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
                return job

    def result(self, job_id: str) -> dict:
        return self.send("GET", f"/jobs/{job_id}/result").raise_for_status().json()

    def fit_predict(self, table: Table) -> tuple[JobTiming, dict]:
        # Serializing the body is part of the client's work, as the direct client's Parquet is.
        return self.post_json_job("/jobs/fit-predict", body=fit_predict_body(table))

    def fit_predict_one_request(self, table: Table) -> tuple[float, dict]:
        """The same job in one request: `POST ...?wait=30` answers with the ended job and
        its result (a job still running after 30 s is followed with the long-poll)."""
        start = time.perf_counter()
        response = self.http.post(
            "/jobs/fit-predict",
            params={"wait": 30},
            content=json.dumps(fit_predict_body(table)).encode(),
            headers={"content-type": "application/json"},
        )
        if response.status_code == 202:
            result = self.wait_for_result(response.json()["id"])
        elif response.status_code == 200 and "result" in response.json():
            result = response.json()["result"]
        else:
            raise RuntimeError(f"POST ?wait: {response.status_code} {response.text[:300]}")
        return time.perf_counter() - start, result

    def post_file_job(self, path: str, data: dict, files: dict) -> tuple[JobTiming, dict]:
        """A multipart submit, then the same long-poll and result fetch."""
        start = time.perf_counter()
        return self._follow(start, path, self.http.post(path, data=data, files=files))

    def post_json_job(
        self, path: str, *, body: dict | None = None, content: bytes | None = None
    ) -> tuple[JobTiming, dict]:
        start = time.perf_counter()
        if content is None:
            content = json.dumps(body).encode()
        response = self.http.post(
            path, content=content, headers={"content-type": "application/json"}
        )
        return self._follow(start, path, response)

    def _follow(self, start: float, path: str, response: httpx.Response) -> tuple[JobTiming, dict]:
        """Wait for the submitted job's result with the result long-poll, timing each step."""
        submit_s, submitted_wall = time.perf_counter() - start, time.time()
        if response.status_code != 202:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
        job_id = response.json()["id"]
        result = self.wait_for_result(job_id)
        return JobTiming.answered_now(job_id, start, submit_s, submitted_wall), result

    def throughput(self, tables: list[Table], clients: int) -> tuple[float, list[JobTiming]]:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            timings = [t for t, _ in pool.map(self.fit_predict, tables)]
        return time.perf_counter() - start, timings

    def submit_fit(self, table: Table) -> tuple[float, str]:
        seconds, job = self.submit("/jobs/fit", fit_body(table))
        return seconds, job["id"]

    def requests_per_second(
        self, url: str, *, authenticated: bool, threads: int, duration_s: float
    ) -> tuple[float, int]:
        """Requests/s of GET `url` from `threads` keep-alive clients; (rate, failures)."""
        counts = [0] * threads
        failures = [0] * threads
        deadline = time.perf_counter() + duration_s

        def hammer(i: int) -> None:
            headers = self.headers if authenticated else {}
            with httpx.Client(headers=headers, timeout=30, verify=_TLS) as client:
                while time.perf_counter() < deadline:
                    if client.get(url).status_code == 200:
                        counts[i] += 1
                    else:
                        failures[i] += 1

        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(hammer, range(threads)))
        return sum(counts) / (time.perf_counter() - start), sum(failures)


def upload_fields(api_url: str) -> dict | None:
    """The multipart form of POST /jobs/fit-predict from the OpenAPI document, if any."""
    spec = httpx.get(f"{api_url}/openapi.json").json()
    operation = spec["paths"].get("/api/v1/jobs/fit-predict", {}).get("post", {})
    content = operation.get("requestBody", {}).get("content", {})
    form = content.get("multipart/form-data")
    if not form:
        return None
    schema = form.get("schema", {})
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema.get("properties", {})
