"""Changing a job's metadata after its submit (PATCH /jobs/{id}), through the real stack:
a JSON Merge Patch of the labels, at any point of the job's life; what a long-poll,
the list's filter and the webhook then see; bad changes are a 422 that changes nothing."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.api import register, wait_for_job
from tests.support.tokens import ISSUED_SECRETS, fresh_token
from tests.support.webhook_receiver import start_receiver

TRAIN = {"X": [[float(i)] for i in range(8)], "y": ["a"] * 4 + ["b"] * 4}
FIT = {"task": "classification", "train": TRAIN}


@pytest.fixture
def receiver():
    receiver, server = start_receiver()
    yield receiver
    server.shutdown()


def _listed(api, headers, label: str) -> list[str]:
    response = api.get(f"/jobs?metadata={label}", headers=headers)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


def test_a_patch_sets_replaces_and_removes_labels_of_an_ended_job(api):
    headers = register(api)
    submitted = api.post(
        "/jobs/fit", json={**FIT, "metadata": {"order": "A-17", "draft": "yes"}}, headers=headers
    ).json()
    job_id = submitted["id"]
    # Ended, and its end is in this API process's recent ends (the long-poll saw it).
    assert api.get(f"/jobs/{job_id}?wait=60", headers=headers).json()["status"] == "succeeded"

    changed = api.patch(
        f"/jobs/{job_id}",
        json={"metadata": {"order": "A-18", "shipped": "2026-12-06", "draft": None}},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    labels = {"order": "A-18", "shipped": "2026-12-06"}
    assert (changed.json()["id"], changed.json()["metadata"]) == (job_id, labels)
    assert api.get(f"/jobs/{job_id}", headers=headers).json()["metadata"] == labels
    # A long-poll of an ended job answers with its labels as they are now, not as the
    # end's message (kept by the API process) had them.
    assert api.get(f"/jobs/{job_id}?wait=5", headers=headers).json()["metadata"] == labels
    assert _listed(api, headers, "order:A-18") == [job_id]
    assert _listed(api, headers, "order:A-17") == []
    assert _listed(api, headers, "draft:yes") == []

    # The merge-patch media type; a key that is not there removed is no change.
    merge = {**headers, "Content-Type": "application/merge-patch+json"}
    again = api.patch(f"/jobs/{job_id}", content=b'{"metadata": {"nope": null}}', headers=merge)
    assert (again.status_code, again.json()["metadata"]) == (200, labels), again.text
    # Nothing to change: the job as it is.
    same = api.patch(f"/jobs/{job_id}", json={}, headers=headers)
    assert (same.status_code, same.json()["metadata"]) == (200, labels)
    # null removes every pair; labels can be given to a job that had none.
    cleared = api.patch(f"/jobs/{job_id}", json={"metadata": None}, headers=headers)
    assert (cleared.status_code, cleared.json()["metadata"]) == (200, None)
    assert api.get(f"/jobs/{job_id}", headers=headers).json()["metadata"] is None
    given = api.patch(f"/jobs/{job_id}", json={"metadata": {"run": "7"}}, headers=headers)
    assert given.json()["metadata"] == {"run": "7"}
    assert _listed(api, headers, "run:7") == [job_id]


def test_labels_changed_while_a_job_runs_are_in_its_end_and_its_webhook(
    api, emulator_knobs, receiver
):
    token = fresh_token()
    setup = api.post("/auth/setup", json={"tabpfn_token": token}).json()
    ISSUED_SECRETS.extend([setup["api_key"], setup["webhook_secret"], token])
    headers = {"Authorization": f"Bearer {setup['api_key']}"}
    emulator_knobs(hang_s=60.0)  # the fit's upstream call hangs until the knob is reset
    try:
        job_id = api.post(
            "/jobs/fit",
            json={**FIT, "metadata": {"order": "A-17"}, "callback_url": receiver.url},
            headers=headers,
        ).json()["id"]
        deadline = time.monotonic() + 30
        while api.get(f"/jobs/{job_id}", headers=headers).json()["status"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        changed = api.patch(
            f"/jobs/{job_id}", json={"metadata": {"stage": "promoted"}}, headers=headers
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["status"] == "running"
    finally:
        emulator_knobs(hang_s=0.0)
    labels = {"order": "A-17", "stage": "promoted"}
    ended = api.get(f"/jobs/{job_id}?wait=60", headers=headers).json()
    assert (ended["status"], ended["metadata"]) == ("succeeded", labels)
    # The fit's model starts with its job's labels as the job ended.
    model = api.get(f"/models/{ended['model_id']}", headers=headers).json()
    assert model["metadata"] == labels
    [delivery] = receiver.wait_for(1)
    event = Webhook(setup["webhook_secret"]).verify(delivery.body, delivery.headers)
    assert (event["data"]["job_id"], event["data"]["metadata"]) == (job_id, labels)

    # An event describes the job's end: a later change is not in its redelivery.
    api.patch(f"/jobs/{job_id}", json={"metadata": {"stage": "retired"}}, headers=headers)
    redelivered = api.post(f"/jobs/{job_id}/webhooks/redeliver", headers=headers)
    assert redelivered.status_code == 202, redelivered.text
    first, again = receiver.wait_for(2)
    resent = Webhook(setup["webhook_secret"]).verify(again.body, again.headers)
    assert resent["data"]["metadata"] == labels


@pytest.mark.parametrize(
    ("patch", "rule"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(16)}}, "17 pairs"),
        ({"metadata": {"a key": "v"}}, "is not allowed"),
        ({"metadata": {"order": "x" * 513}}, "513 characters"),
        ({"metadata": {"order": "A\u0000"}}, "NUL"),
        ({"metadata": {"order": 17}}, "metadata.order"),
        ({"metadata": ["order", "A-18"]}, "metadata"),
        ({"metadata": "order=A-18"}, "metadata"),
        ({"status": "canceled"}, "status"),
    ],
)
def test_a_bad_patch_is_a_422_that_changes_nothing(api, patch, rule):
    headers = register(api)
    job = api.post("/jobs/fit", json={**FIT, "metadata": {"order": "A-17"}}, headers=headers)
    job_id = job.json()["id"]
    wait_for_job(api, headers, job_id)  # no job of this test outlives it
    refused = api.patch(f"/jobs/{job_id}", json=patch, headers=headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "validation_error"
    assert rule in refused.json()["detail"], refused.json()["detail"]
    after = api.get(f"/jobs/{job_id}", headers=headers).json()
    assert (after["status"], after["metadata"]) == ("succeeded", {"order": "A-17"})


def test_only_the_owner_changes_a_jobs_labels(api):
    headers = register(api)
    job_id = api.post("/jobs/fit", json={**FIT, "metadata": {"order": "A-17"}}, headers=headers)
    job_id = job_id.json()["id"]
    wait_for_job(api, headers, job_id)
    body = {"metadata": {"order": "stolen"}}
    foreign = api.patch(f"/jobs/{job_id}", json=body, headers=register(api))
    assert (foreign.status_code, foreign.json()["code"]) == (404, "not_found")
    anonymous = api.patch(f"/jobs/{job_id}", json=body)
    assert anonymous.status_code == 401
    missing = api.patch(f"/jobs/{job_id[:-4]}0000", json=body, headers=headers)
    assert missing.status_code == 404
    assert api.get(f"/jobs/{job_id}", headers=headers).json()["metadata"] == {"order": "A-17"}
