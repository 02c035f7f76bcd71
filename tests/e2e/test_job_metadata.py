"""A job's metadata (the caller's labels), through the real stack: given at submit,
returned with the job and its end, sent in the signed webhook, a filter of GET /jobs,
part of a submit's idempotency; bad metadata is a 422 that stores nothing."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from standardwebhooks.webhooks import Webhook

from shared.jobs.events import CHANNEL, parse_change
from tests.support.api import register, wait_for_job
from tests.support.tokens import ISSUED_SECRETS, fresh_token
from tests.support.webhook_receiver import start_receiver

TRAIN = {
    "X": [[float(i), "red" if i % 2 else "blue"] for i in range(8)],
    "y": ["a"] * 4 + ["b"] * 4,
}
LABELS = {"order": "A-17", "pipeline": "nightly.v2"}


@pytest.fixture
def receiver():
    receiver, server = start_receiver()
    yield receiver
    server.shutdown()


def _listed(api, headers, *filters: str) -> list[str]:
    query = "&".join(f"metadata={f}" for f in filters)
    response = api.get(f"/jobs?{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


def test_metadata_rides_with_the_job_its_end_its_webhook_and_the_list(api, receiver):
    token = fresh_token()
    setup = api.post("/auth/setup", json={"tabpfn_token": token}).json()
    ISSUED_SECRETS.extend([setup["api_key"], setup["webhook_secret"], token])
    headers = {"Authorization": f"Bearer {setup['api_key']}"}

    fit = api.post(
        "/jobs/fit",
        json={
            "task": "classification",
            "train": TRAIN,
            "metadata": LABELS,
            "callback_url": receiver.url,
        },
        headers=headers,
    )
    assert fit.status_code == 202, fit.text
    assert fit.json()["metadata"] == LABELS
    fit_id = fit.json()["id"]
    # The long-poll's answer is built from the end's message, not a read of the row.
    ended = api.get(f"/jobs/{fit_id}?wait=60", headers=headers).json()
    assert (ended["status"], ended["metadata"]) == ("succeeded", LABELS)
    assert api.get(f"/jobs/{fit_id}", headers=headers).json()["metadata"] == LABELS

    [delivery] = receiver.wait_for(1)
    event = Webhook(setup["webhook_secret"]).verify(delivery.body, delivery.headers)
    assert (event["data"]["job_id"], event["data"]["metadata"]) == (fit_id, LABELS)

    # An upload names it as JSON text; a job without metadata shows null.
    model_id = ended["model_id"]
    predict = api.post(
        "/jobs/predict",
        data={"model_id": model_id, "metadata": json.dumps({"order": "A-18"})},
        files={"file": ("test.csv", b"x0,x1\n1.5,red\n", "text/csv")},
        headers=headers,
    )
    assert predict.status_code == 202, predict.text
    assert predict.json()["metadata"] == {"order": "A-18"}
    plain = api.post(
        "/jobs/fit-predict?wait=60",
        json={"task": "classification", "train": TRAIN, "test": {"X": [[2.0, "red"]]}},
        headers=headers,
    )
    assert (plain.status_code, plain.json()["metadata"]) == (200, None), plain.text
    predict_id = predict.json()["id"]
    assert wait_for_job(api, headers, predict_id)["metadata"] == {"order": "A-18"}

    # Filters: every pair must be held; the filter's value may hold colons.
    assert _listed(api, headers, "order:A-17") == [fit_id]
    assert _listed(api, headers, "order:A-18") == [predict_id]
    assert _listed(api, headers, "order:A-17", "pipeline:nightly.v2") == [fit_id]
    assert _listed(api, headers, "order:A-17", "pipeline:weekly") == []
    assert _listed(api, headers, "pipeline:nightly.v2", "order:A-18") == []
    assert len(_listed(api, headers)) == 3
    typed = api.get("/jobs?type=predict&metadata=order:A-18", headers=headers).json()
    assert [j["id"] for j in typed["jobs"]] == [predict_id]

    # Another account's job with the same labels is not in this list, nor this one in its.
    other = register(api)
    theirs = api.post(
        "/jobs/fit",
        json={"task": "classification", "train": TRAIN, "metadata": LABELS},
        headers=other,
    ).json()["id"]
    wait_for_job(api, other, theirs)  # no job of this test outlives it
    assert _listed(api, headers, "order:A-17") == [fit_id]
    assert _listed(api, other, "order:A-17") == [theirs]


def test_metadata_is_part_of_a_submits_idempotency(api):
    headers = register(api)
    body = {"task": "classification", "train": TRAIN, "metadata": LABELS}
    key = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    first = api.post("/jobs/fit", json=body, headers=key)
    again = api.post("/jobs/fit", json=body, headers=key)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert (again.json()["id"], again.json()["metadata"]) == (first.json()["id"], LABELS)
    other = api.post("/jobs/fit", json={**body, "metadata": {"order": "B-1"}}, headers=key)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict")


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({f"k{i}": "v" for i in range(17)}, "17 pairs"),
        ({"order id": "x"}, "key 'order id' is not allowed"),
        ({"": "x"}, "key '' is not allowed"),
        ({"k" * 65: "x"}, "is not allowed"),
        ({"order": 17}, "metadata.order"),  # the schema's own refusal of a number
        ({"order": "x" * 513}, "513 characters"),
        ({"order": "a\u0000b"}, "NUL"),
        (["order", "A-17"], "metadata"),
    ],
)
def test_bad_metadata_is_a_422_naming_the_rule_and_stores_nothing(api, metadata, says):
    headers = register(api)
    response = api.post(
        "/jobs/fit",
        json={"task": "classification", "train": TRAIN, "metadata": metadata},
        headers=headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert says in response.json()["detail"], response.json()
    assert api.get("/jobs", headers=headers).json()["jobs"] == []


def test_bad_metadata_in_an_upload_or_a_filter_is_a_422(api):
    headers = register(api)
    for text, says in (
        ("{order: A-17}", "metadata is not valid JSON"),
        ('["A-17"]', "metadata must be a JSON object"),
        ('{"order": 17}', "metadata['order'] must be text, not int"),
    ):
        response = api.post(
            "/jobs/fit",
            data={"task": "classification", "target": "y", "metadata": text},
            files={"file": ("train.csv", b"x,y\n1,a\n2,b\n3,a\n4,b\n", "text/csv")},
            headers=headers,
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"
        assert says in response.json()["detail"], response.json()
    assert api.get("/jobs", headers=headers).json()["jobs"] == []
    for query, says in (("metadata=order", "not key:value"), ("metadata=a b:c", "not key:value")):
        response = api.get(f"/jobs?{query}", headers=headers)
        assert response.status_code == 422, response.text
        assert says in response.json()["detail"], response.json()


def test_labels_too_long_for_the_end_message_are_read_from_the_job(api, stack):
    """An end message leaves out labels over 1 KB (every API process keeps thousands
    of recent ends); a long-poll answered at that end reads them from the job."""
    headers = register(api)
    long = {f"k{i}": "v" * 100 for i in range(16)}  # about 1.8 KB as JSON
    listener = redis.Redis.from_url(stack.env["REDIS_URL"]).pubsub()
    listener.subscribe(CHANNEL)
    try:
        submitted = api.post(
            "/jobs/fit?wait=60",
            json={"task": "classification", "train": TRAIN, "metadata": long},
            headers=headers,
        )
        assert submitted.status_code == 200, submitted.text  # ended within the wait
        assert submitted.json()["metadata"] == long
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 10
        final = None
        while final is None:
            assert time.monotonic() < deadline, "no end message was seen"
            message = listener.get_message(timeout=1)
            if message and message["type"] == "message":
                found, status, fields = parse_change(message["data"].decode())
                if found == job_id and fields is not None:
                    final = fields
    finally:
        listener.close()
    assert status == "succeeded" and "labels" not in final
    assert api.get(f"/jobs/{job_id}?wait=5", headers=headers).json()["metadata"] == long
