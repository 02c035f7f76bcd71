"""Long-poll and server-sent events: answers the moment a job changes."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx

from tests.support.api import register
from tests.support.tokens import fresh_token

FIT = {
    "task": "classification",
    "train": {"X": [[float(i)] for i in range(8)], "y": ["a"] * 4 + ["b"] * 4},
}


def test_long_poll_returns_the_moment_the_job_ends(api, emulator_knobs):
    headers = register(api)
    emulator_knobs(latency_s=0.4)  # every upstream call: the job runs a few seconds
    job_id = api.post("/jobs/fit", json=FIT, headers=headers).json()["id"]

    short = api.get(f"/jobs/{job_id}", params={"wait": 0.5}, headers=headers)
    assert short.json()["status"] in ("queued", "running")  # gave up waiting, as asked

    started = time.monotonic()
    done = api.get(f"/jobs/{job_id}", params={"wait": 30}, headers=headers, timeout=40)
    returned_at = datetime.now().astimezone()
    assert time.monotonic() - started < 25
    job = done.json()
    assert job["status"] == "succeeded"
    finished_at = datetime.fromisoformat(job["finished_at"])
    # Pushed, not polled: the answer follows the commit within a fraction of a second.
    assert (returned_at - finished_at).total_seconds() < 0.5
    # Answered from the message that ended the job: word for word what the row holds.
    assert job == api.get(f"/jobs/{job_id}", headers=headers).json()


def test_result_long_poll_answers_with_the_result_the_moment_the_job_succeeds(api, emulator_knobs):
    headers = register(api)
    emulator_knobs(latency_s=0.4)
    job_id = api.post("/jobs/fit", json=FIT, headers=headers).json()["id"]

    short = api.get(f"/jobs/{job_id}/result", params={"wait": 0.5}, headers=headers)
    assert (short.status_code, short.json()["code"]) == (409, "result_not_available")
    assert short.json()["job_status"] in ("queued", "running")  # gave up waiting, as asked

    started = time.monotonic()
    done = api.get(f"/jobs/{job_id}/result", params={"wait": 30}, headers=headers, timeout=40)
    returned_at = datetime.now().astimezone()
    assert time.monotonic() - started < 25
    assert done.status_code == 200, done.text
    job = api.get(f"/jobs/{job_id}", headers=headers).json()
    assert job["status"] == "succeeded"
    # Pushed, not polled: the result follows the job's end within a fraction of a second.
    assert (returned_at - datetime.fromisoformat(job["finished_at"])).total_seconds() < 0.5
    assert done.json() == api.get(f"/jobs/{job_id}/result", headers=headers).json()
    assert done.json()["model_id"] == job["model_id"]
    # The table formats wait the same way.
    as_csv = api.get(f"/jobs/{job_id}/result", params={"wait": 5, "format": "csv"}, headers=headers)
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert job["model_id"] in as_csv.text


def test_result_long_poll_of_a_failed_job_answers_at_once_with_its_state(api, emulator_knobs):
    revoked = register(api, "dave-token")
    emulator_knobs(revoked_tokens=["dave-token"])
    job_id = api.post("/jobs/fit", json=FIT, headers=revoked).json()["id"]
    waited = api.get(f"/jobs/{job_id}/result", params={"wait": 30}, headers=revoked, timeout=40)
    assert (waited.status_code, waited.json()["code"]) == (409, "result_not_available")
    assert waited.json()["job_status"] == "failed"
    started = time.monotonic()
    again = api.get(f"/jobs/{job_id}/result", params={"wait": 30}, headers=revoked, timeout=40)
    assert again.json()["job_status"] == "failed"
    assert time.monotonic() - started < 5  # an ended job is not waited on


def _long_poll_then(api, headers, job_id, action) -> dict:
    """Start a long-poll on the job, run `action` while it waits, return its answer."""
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            api.get, f"/jobs/{job_id}", params={"wait": 30}, headers=headers, timeout=40
        )
        time.sleep(0.3)
        action()
        return waiting.result().json()


def test_long_polls_of_failed_and_canceled_jobs_answer_what_the_row_holds(api, emulator_knobs):
    headers = register(api)
    emulator_knobs(hang_s=1.0)  # fit calls hang a second: time to cancel
    job_id = api.post("/jobs/fit", json=FIT, headers=headers).json()["id"]
    canceled = _long_poll_then(
        api, headers, job_id, lambda: api.post(f"/jobs/{job_id}/cancel", headers=headers)
    )
    assert (canceled["status"], canceled["error"]["code"]) == ("canceled", "canceled")
    assert canceled == api.get(f"/jobs/{job_id}", headers=headers).json()

    revoked = register(api, "carol-token")
    emulator_knobs(hang_s=0.0, revoked_tokens=["carol-token"])
    job_id = api.post("/jobs/fit", json=FIT, headers=revoked).json()["id"]
    failed = _long_poll_then(api, revoked, job_id, lambda: None)
    assert (failed["status"], failed["error"]["code"]) == ("failed", "upstream_auth_failed")
    assert failed == api.get(f"/jobs/{job_id}", headers=revoked).json()


def test_event_stream_follows_stages_to_the_end(api, stack, emulator_knobs):
    headers = register(api)
    emulator_knobs(latency_s=0.3)
    job_id = api.post("/jobs/fit", json=FIT, headers=headers).json()["id"]
    events = []
    with httpx.stream(
        "GET", f"{stack.api_url}/api/v1/jobs/{job_id}/events", headers=headers, timeout=60
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    states = [(e["status"], e["stage"]) for e in events]
    assert states[-1] == ("succeeded", None)
    assert ("running", "fitting") in states
    assert len(states) == len(set(states))  # one event per change, no repeats


def test_waiting_on_someone_elses_job_is_404(api, stack):
    owner, other = register(api), register(api)
    job_id = api.post("/jobs/fit", json=FIT, headers=owner).json()["id"]
    assert api.get(f"/jobs/{job_id}", params={"wait": 5}, headers=other).status_code == 404
    result = api.get(f"/jobs/{job_id}/result", params={"wait": 5}, headers=other)
    assert (result.status_code, result.json()["code"]) == (404, "not_found")
    response = httpx.get(f"{stack.api_url}/api/v1/jobs/{job_id}/events", headers=other)
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


# --- A submit that waits for its job (POST ...?wait=S) ---------------------------------

FIT_PREDICT = {
    **FIT,
    "test": {"X": [[0.5], [6.5]]},
    "output": "probabilities",
}


def test_a_submit_with_wait_answers_with_the_ended_job_and_its_result(api):
    headers = register(api)
    started = time.monotonic()
    done = api.post(
        "/jobs/fit-predict", params={"wait": 30}, json=FIT_PREDICT, headers=headers, timeout=40
    )
    returned_at = datetime.now().astimezone()
    assert done.status_code == 200, done.text
    assert time.monotonic() - started < 25
    answer = done.json()
    result = answer.pop("result")
    job = api.get(f"/jobs/{answer['id']}", headers=headers).json()
    assert answer == job  # the Job in its final state, as GET shows it
    assert job["status"] == "succeeded"
    assert result == api.get(f"/jobs/{job['id']}/result", headers=headers).json()
    assert len(result["probabilities"]) == 2 and result["classes"] == ["a", "b"]
    # Answered the moment the job ended, not at a poll's next turn.
    assert (returned_at - datetime.fromisoformat(job["finished_at"])).total_seconds() < 0.5


def test_a_submit_whose_job_outlasts_its_wait_is_accepted_as_usual(api, emulator_knobs):
    headers = register(api)
    emulator_knobs(latency_s=0.4)  # the job runs a few seconds
    started = time.monotonic()
    accepted = api.post("/jobs/fit", params={"wait": 0.5}, json=FIT, headers=headers)
    assert 0.5 <= time.monotonic() - started < 5
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert job["status"] in ("queued", "running") and "result" not in job
    result = api.get(f"/jobs/{job['id']}/result", params={"wait": 30}, headers=headers, timeout=40)
    assert result.status_code == 200 and result.json()["model_id"]


def test_a_submit_waiting_for_a_job_that_fails_answers_with_its_error(api, emulator_knobs):
    token = fresh_token()
    revoked = register(api, token)
    emulator_knobs(revoked_tokens=[token])
    done = api.post("/jobs/fit", params={"wait": 30}, json=FIT, headers=revoked, timeout=40)
    assert done.status_code == 200, done.text
    job = done.json()
    assert job["status"] == "failed" and job["error"]["code"] and "result" not in job
    assert job == api.get(f"/jobs/{job['id']}", headers=revoked).json()


def test_a_replayed_submit_with_wait_answers_with_the_first_jobs_outcome(api):
    headers = {**register(api), "Idempotency-Key": "wait-replay-1"}
    first = api.post("/jobs/fit", params={"wait": 30}, json=FIT, headers=headers, timeout=40)
    assert first.status_code == 200, first.text
    started = time.monotonic()
    again = api.post("/jobs/fit", params={"wait": 30}, json=FIT, headers=headers, timeout=40)
    assert time.monotonic() - started < 5  # an ended job is not waited on
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


def test_an_upload_submit_waits_too(api):
    headers = register(api)
    csv = "x,target\n" + "".join(f"{i},{'a' if i < 4 else 'b'}\n" for i in range(8))
    done = api.post(
        "/jobs/fit",
        params={"wait": 30},
        data={"task": "classification", "target": "target"},
        files={"file": ("train.csv", csv.encode())},
        headers=headers,
        timeout=40,
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded" and done.json()["result"]["n_rows"] == 8


def test_a_bad_wait_is_refused_before_anything_is_stored(api):
    headers = register(api)
    refused = api.post("/jobs/fit", params={"wait": -1}, json=FIT, headers=headers)
    assert (refused.status_code, refused.json()["code"]) == (422, "validation_error")
    assert api.get("/jobs", headers=headers).json()["jobs"] == []


def test_a_key_revoked_while_its_requests_wait_gets_nothing_more(api, stack, emulator_knobs):
    """Revocation bites at once on requests already waiting: long-polls of the job and
    of its result, a submit's wait and an event stream get no word of the job after it."""
    owner = register(api)
    created = api.post("/auth/keys", headers=owner).json()
    key = {"Authorization": f"Bearer {created['api_key']}"}
    emulator_knobs(hang_s=2.0)  # fit calls hang: the requests below are still waiting
    job_id = api.post("/jobs/fit", json=FIT, headers=key).json()["id"]
    stream_lines: list[str] = []

    def follow_events() -> None:
        with httpx.stream(
            "GET", f"{stack.api_url}/api/v1/jobs/{job_id}/events", headers=key, timeout=60
        ) as response:
            assert response.status_code == 200
            stream_lines.extend(line for line in response.iter_lines() if line)

    wait = {"wait": 30}
    with ThreadPoolExecutor(4) as pool:
        job_poll = pool.submit(api.get, f"/jobs/{job_id}", params=wait, headers=key, timeout=40)
        result_poll = pool.submit(
            api.get, f"/jobs/{job_id}/result", params=wait, headers=key, timeout=40
        )
        submit = pool.submit(api.post, "/jobs/fit", params=wait, json=FIT, headers=key, timeout=40)
        events = pool.submit(follow_events)
        time.sleep(0.5)  # all four are waiting on their jobs
        revoked = api.delete(f"/auth/keys/{created['key_id']}", headers=owner)
        assert revoked.status_code == 204
        for answer in (job_poll.result(), result_poll.result(), submit.result()):
            assert (answer.status_code, answer.json()["code"]) == (401, "unauthorized")
        events.result()
    assert api.get(f"/jobs/{job_id}", headers=owner).json()["status"] == "succeeded"
    # The stream showed the job before the revocation, then ended with an error event.
    assert stream_lines[-2:] == [
        "event: error",
        'data: {"detail": "The API key is not valid.", "code": "unauthorized"}',
    ]
    assert not any('"status":"succeeded"' in line for line in stream_lines)


def test_a_submits_wait_for_a_job_that_did_not_succeed_checks_the_key_too(api, emulator_knobs):
    """A success's key is checked with its result's read; any other end is checked
    on its own: a canceled job's wait, its key revoked meanwhile, gets a 401."""
    owner = register(api)
    created = api.post("/auth/keys", headers=owner).json()
    key = {"Authorization": f"Bearer {created['api_key']}"}
    emulator_knobs(hang_s=2.0)
    with ThreadPoolExecutor(1) as pool:
        submit = pool.submit(api.post, "/jobs/fit", params={"wait": 30}, json=FIT, headers=key)
        deadline = time.monotonic() + 10
        while not (jobs := api.get("/jobs", headers=owner).json()["jobs"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert api.delete(f"/auth/keys/{created['key_id']}", headers=owner).status_code == 204
        assert api.post(f"/jobs/{jobs[0]['id']}/cancel", headers=owner).status_code == 200
        answer = submit.result(timeout=40)
    assert (answer.status_code, answer.json()["code"]) == (401, "unauthorized")


def test_an_event_stream_whose_job_is_deleted_ends_with_an_error_event(api, stack, emulator_knobs):
    headers = register(api)
    emulator_knobs(hang_s=60.0)  # the fit call hangs until the knob goes back to 0
    try:
        job_id = api.post("/jobs/fit", json=FIT, headers=headers).json()["id"]
        lines: list[str] = []
        with httpx.stream(
            "GET", f"{stack.api_url}/api/v1/jobs/{job_id}/events", headers=headers, timeout=60
        ) as response:
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                if line.startswith("data: ") and len(lines) == 3:
                    # The job goes while the stream waits, with no message to wake it:
                    # its next look (the re-check timer) finds no job.
                    stack.sql("DELETE FROM jobs WHERE id = :id RETURNING id", id=job_id)
    finally:
        emulator_knobs(hang_s=0.0)
    assert lines[-2:] == [
        "event: error",
        f'data: {{"detail": "No job {job_id}.", "code": "not_found"}}',
    ]
