"""Every route that names a resource answers 404 for another user's resource."""

from __future__ import annotations

import re
import uuid

from tests.support.api import register, wait_for_job

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _with_random_ids(path: str, *ids: str) -> str:
    for known in ids:
        path = path.replace(known, str(uuid.uuid4()))
    return path


def _ids_masked(text: str) -> str:
    return _UUID.sub("<id>", text)


FIT = {
    "task": "classification",
    "train": {"X": [[float(i)] for i in range(6)], "y": ["a"] * 3 + ["b"] * 3},
}


def test_another_users_resources_are_absent_on_every_route(api, stack):
    owner, stranger = register(api), register(api)  # accounts of this test's own
    job = wait_for_job(api, owner, api.post("/jobs/fit", json=FIT, headers=owner).json()["id"])
    job_id, model_id = job["id"], job["model_id"]
    key_id = api.get("/auth/me", headers=owner).json()["key_id"]

    routes = [
        ("GET", f"/jobs/{job_id}"),
        ("GET", f"/jobs/{job_id}?wait=1"),
        ("GET", f"/jobs/{job_id}/result"),
        ("GET", f"/jobs/{job_id}/events"),
        ("POST", f"/jobs/{job_id}/cancel"),
        ("GET", f"/jobs/{job_id}/webhooks"),
        ("POST", f"/jobs/{job_id}/webhooks/redeliver"),
        ("GET", f"/models/{model_id}"),
        ("DELETE", f"/models/{model_id}"),
        ("DELETE", f"/auth/keys/{key_id}"),
    ]
    for method, path in routes:
        response = api.request(method, path, headers=stranger)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] in ("not_found", "model_not_found"), (method, path)
        # Word for word what a resource that never existed gets: nothing leaks.
        absent = api.request(method, _with_random_ids(path, job_id, model_id), headers=stranger)
        assert _ids_masked(response.text) == _ids_masked(absent.text)

    predict = api.post("/jobs/predict", json={"model_id": model_id, "X": [[1.0]]}, headers=stranger)
    assert (predict.status_code, predict.json()["code"]) == (404, "model_not_found")
    assert api.get("/jobs", headers=stranger).json()["jobs"] == []
    assert api.get("/models", headers=stranger).json() == []
    # The owner still has everything.
    assert api.get(f"/models/{model_id}", headers=owner).status_code == 200
    assert api.get(f"/jobs/{job_id}/result", headers=owner).status_code == 200
