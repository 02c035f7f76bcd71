"""Quickstart: classify Iris flowers with TabPFN through the TabPFN API.

    API_URL=http://127.0.0.1:8000 TABPFN_TOKEN=demo-token python examples/quickstart.py

Steps: register with your TabPFN token (you get an API key back), submit a fit
job with the training rows, wait for it, submit a predict job for the test
rows, wait again, and fetch the result. Every job runs in the background, so
each request answers at once and we poll the job until it has finished.

Needs only `httpx` (pip install httpx). `tabpfn-api dev` starts a local stack
whose emulator accepts the token `demo-token`.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

import httpx

API_URL = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
TABPFN_TOKEN = os.environ.get("TABPFN_TOKEN", "demo-token")
DATA = Path(__file__).parent / "data" / "iris.csv"
POLL_INTERVAL_S = 0.5
JOB_TIMEOUT_S = 300


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def call(client: httpx.Client, method: str, path: str, expect: int, **kwargs) -> dict:
    """One API request; stops the program with the service's `detail` and `code` on error."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {API_URL}: {exc}")
    if response.status_code != expect:
        try:
            body = response.json()  # errors are {"detail": "...", "code": "..."}
            fail(f"{method} {path}: HTTP {response.status_code}: {body['detail']} ({body['code']})")
        except (ValueError, KeyError, TypeError):
            fail(f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


def load_iris() -> tuple[list[str], list[list[float]], list[str]]:
    """The bundled CSV as column names, feature rows and species labels."""
    with DATA.open(newline="") as file:
        reader = csv.reader(file)
        header = next(reader)
        rows = list(reader)
    columns = header[:-1]  # the last column is the species, the target
    X = [[float(value) for value in row[:-1]] for row in rows]
    y = [row[-1] for row in rows]
    return columns, X, y


def wait_for(client: httpx.Client, job: dict) -> dict:
    """Poll a job until it has finished, printing each change of state or stage."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    seen = None
    while True:
        state = (job["status"], job["stage"])
        if state != seen:
            stage = f" ({job['stage']})" if job["stage"] else ""
            print(f"  {job['type']} job: {job['status']}{stage}")
            seen = state
        if job["status"] == "succeeded":
            return job
        if job["status"] in ("failed", "canceled"):
            error = job["error"] or {"message": job["status"], "code": job["status"]}
            fail(f"job {job['id']} {job['status']}: {error['message']} ({error['code']})")
        if time.monotonic() > deadline:
            fail(f"job {job['id']} did not finish within {JOB_TIMEOUT_S}s")
        time.sleep(POLL_INTERVAL_S)
        job = call(client, "GET", f"/jobs/{job['id']}", 200)


def main() -> None:
    columns, X, y = load_iris()
    # A deterministic split: every fifth flower is held out for testing. The
    # file is sorted by species, so each species gets 10 test rows.
    X_train = [row for i, row in enumerate(X) if i % 5 != 4]
    y_train = [label for i, label in enumerate(y) if i % 5 != 4]
    X_test = [row for i, row in enumerate(X) if i % 5 == 4]
    y_test = [label for i, label in enumerate(y) if i % 5 == 4]
    print(f"Iris: {len(X_train)} training rows, {len(X_test)} test rows, columns {columns}")

    with httpx.Client(base_url=f"{API_URL}/api/v1", timeout=30) as client:
        # 1. Register: the TabPFN token is stored encrypted, and an API key for
        #    this service comes back. Keep it secret like a password.
        account = call(client, "POST", "/auth/setup", 201, json={"tabpfn_token": TABPFN_TOKEN})
        client.headers["Authorization"] = f"Bearer {account['api_key']}"
        print(f"Registered at {API_URL} (API key id {account['key_id']})")

        # 2. Fit a classifier on the training rows.
        fit_request = {
            "task": "classification",
            "train": {"X": X_train, "y": y_train, "columns": columns},
        }
        fit_job = wait_for(client, call(client, "POST", "/jobs/fit", 202, json=fit_request))
        model_id = fit_job["model_id"]
        print(f"Model {model_id} is ready")

        # 3. Predict the test rows with that model, asking for class probabilities too.
        predict_request = {
            "model_id": model_id,
            "X": X_test,
            "columns": columns,
            "output": "probabilities",
        }
        predict_job = wait_for(
            client, call(client, "POST", "/jobs/predict", 202, json=predict_request)
        )

        # 4. Fetch the result: a label per row, and one probability per class per row.
        result = call(client, "GET", f"/jobs/{predict_job['id']}/result", 200)

    predictions = result["predictions"]
    print("\nSome predictions, with probabilities for " + ", ".join(result["classes"]) + ":")
    rows = zip(X_test, y_test, predictions, result["probabilities"], strict=True)
    for features, truth, predicted, probabilities in list(rows)[::6]:  # a few of each species
        shown = ", ".join(f"{p:.2f}" for p in probabilities)
        print(f"  {features} -> {predicted:<10}  (true: {truth:<10})  [{shown}]")

    correct = sum(p == t for p, t in zip(predictions, y_test, strict=True))
    print(f"\nAccuracy on the {len(X_test)} test rows: {correct / len(X_test):.3f}")


if __name__ == "__main__":
    main()
