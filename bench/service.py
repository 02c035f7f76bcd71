"""The service side: what a client of the HTTP API does, timed."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import httpx

from bench.data import Table, fit_body, fit_predict_body

FINISHED = ("succeeded", "failed", "canceled")


@dataclass(frozen=True)
class JobTiming:
    """One job seen from the client, and the server-side timestamps that split it."""

    job_id: str
    total_s: float
    submit_s: float  # POST until 202
    wait_s: float  # 202 until the long-poll answered `succeeded`
    result_s: float  # GET /result
    queue_s: float  # 202 at the client → started_at (broker, worker pickup, claim)
    run_s: float  # started_at → finished_at (the worker's whole run)
    notify_s: float  # finished_at → the long-poll's answer reached the client


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


class ServiceUser:
    def __init__(self, api_url: str, api_key: str) -> None:
        self.base = f"{api_url}/api/v1"
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

    def wait(self, job_id: str, timeout_s: float = 300) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} did not finish in {timeout_s:.0f} s")
            job = self.send("GET", f"/jobs/{job_id}", params={"wait": 30})
            job = job.raise_for_status().json()
            if job["status"] in FINISHED:
                if job["status"] != "succeeded":
                    raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
                return job

    def result(self, job_id: str) -> dict:
        return self.send("GET", f"/jobs/{job_id}/result").raise_for_status().json()

    def fit_predict(self, table: Table) -> tuple[JobTiming, dict]:
        # Serializing the body is part of the client's work, as the direct client's Parquet is.
        return self.post_json_job("/jobs/fit-predict", body=fit_predict_body(table))

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
        """Long-poll the submitted job to its end and fetch its result, timing each step."""
        submit_s, submitted_wall = time.perf_counter() - start, time.time()
        if response.status_code != 202:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
        job = self.wait(response.json()["id"])
        answered_wall, answered = time.time(), time.perf_counter()
        result = self.result(job["id"])
        end = time.perf_counter()
        # Same machine, same clock: Postgres now() against the client's time.time().
        started, finished = _ts(job["started_at"]), _ts(job["finished_at"])
        timing = JobTiming(
            job_id=job["id"],
            total_s=end - start,
            submit_s=submit_s,
            wait_s=answered - start - submit_s,
            result_s=end - answered,
            queue_s=started - submitted_wall,
            run_s=finished - started,
            notify_s=answered_wall - finished,
        )
        return timing, result

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
            with httpx.Client(headers=headers, timeout=30) as client:
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
