"""Calls most end-to-end tests make: sign up, and wait for a job to finish."""

from __future__ import annotations

import time

import httpx

from tests.support.tokens import ISSUED_SECRETS, fresh_token


def register(api: httpx.Client, token: str | None = None) -> dict[str, str]:
    """Sign up with a TabPFN token (by default a fresh one: an account of the
    test's own); returns the Authorization header to use."""
    token = token or fresh_token()
    response = api.post("/auth/setup", json={"tabpfn_token": token})
    assert response.status_code == 201, response.text
    ISSUED_SECRETS.extend([response.json()["api_key"], response.json()["webhook_secret"], token])
    return {"Authorization": f"Bearer {response.json()['api_key']}"}


def wait_for_job(api: httpx.Client, headers: dict, job_id: str, timeout: float = 90) -> dict:
    """Poll until the job has finished; returns its final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")
