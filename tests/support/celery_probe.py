"""A one-task Celery app that tests/e2e/test_embedded.py runs in a real worker.

The broker and result backend come from PROBE_CELERY_URL so the worker
subprocess talks to the test's private Redis.
"""

import os

from celery import Celery

app = Celery(
    "celery_probe",
    broker=os.environ.get("PROBE_CELERY_URL"),
    backend=os.environ.get("PROBE_CELERY_URL"),
)


@app.task(name="celery_probe.add")
def add(a: int, b: int) -> int:
    return a + b
