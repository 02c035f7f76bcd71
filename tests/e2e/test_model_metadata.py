"""A fitted model's metadata, through the real stack: its fit job's labels as it ended,
changed by PATCH /models/{id} apart from the job's, a filter of GET /models that its
pages keep; bad changes are a 422 that changes nothing."""

from __future__ import annotations

import pytest

from tests.support.api import register, wait_for_job

TRAIN = {"X": [[float(i)] for i in range(8)], "y": ["a"] * 4 + ["b"] * 4}


def _fit(api, headers, metadata=None) -> dict:
    body = {"task": "classification", "train": TRAIN}
    if metadata is not None:
        body["metadata"] = metadata
    job = api.post("/jobs/fit?wait=60", json=body, headers=headers)
    assert job.status_code == 200, job.text
    return job.json()


def _listed(api, headers, query: str) -> list[str]:
    response = api.get(f"/models?{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [model["id"] for model in response.json()]


def test_a_model_starts_with_its_fits_labels_and_keeps_its_own(api):
    headers = register(api)
    fit = _fit(api, headers, {"name": "churn", "order": "A-17"})
    model_id = fit["model_id"]
    model = api.get(f"/models/{model_id}", headers=headers).json()
    assert model["metadata"] == {"name": "churn", "order": "A-17"}
    plain = _fit(api, headers)
    assert api.get(f"/models/{plain['model_id']}", headers=headers).json()["metadata"] is None

    changed = api.patch(
        f"/models/{model_id}",
        json={"metadata": {"stage": "live", "order": None}},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    labels = {"name": "churn", "stage": "live"}
    assert (changed.json()["id"], changed.json()["metadata"]) == (model_id, labels)
    assert api.get(f"/models/{model_id}", headers=headers).json()["metadata"] == labels
    # The job and the model are labelled apart from here on.
    assert api.get(f"/jobs/{fit['id']}", headers=headers).json()["metadata"] == {
        "name": "churn",
        "order": "A-17",
    }
    api.patch(f"/jobs/{fit['id']}", json={"metadata": {"name": "old"}}, headers=headers)
    assert api.get(f"/models/{model_id}", headers=headers).json()["metadata"] == labels

    assert _listed(api, headers, "metadata=stage:live") == [model_id]
    assert _listed(api, headers, "metadata=name:churn&metadata=stage:live") == [model_id]
    assert _listed(api, headers, "metadata=order:A-17") == []
    assert len(_listed(api, headers, "")) == 2
    # A name given to a model that had none; null removes every pair.
    named = api.patch(
        f"/models/{plain['model_id']}", json={"metadata": {"name": "baseline"}}, headers=headers
    )
    assert named.json()["metadata"] == {"name": "baseline"}
    assert _listed(api, headers, "metadata=name:baseline") == [plain["model_id"]]
    cleared = api.patch(f"/models/{model_id}", json={"metadata": None}, headers=headers)
    assert (cleared.status_code, cleared.json()["metadata"]) == (200, None)
    assert _listed(api, headers, "metadata=stage:live") == []
    same = api.patch(f"/models/{model_id}", json={}, headers=headers)
    assert (same.status_code, same.json()["metadata"]) == (200, None)


def test_the_pages_of_a_filtered_model_list_keep_its_filter(api):
    headers = register(api)
    growth = {"team": "growth", "tier": "a"}
    # Newest first: growth, growth, a model of the tier but not the team, growth.
    team = [_fit(api, headers, growth)["model_id"]]
    _fit(api, headers, {"team": "ops", "tier": "a"})
    team += [_fit(api, headers, growth)["model_id"] for _ in range(2)]
    first = api.get("/models?limit=2&metadata=team:growth&metadata=tier:a", headers=headers)
    assert [m["id"] for m in first.json()] == team[:0:-1]
    following = first.links["next"]["url"]
    assert "metadata=team%3Agrowth&metadata=tier%3Aa" in following
    # The link is a path from the API's root; this client's base URL holds /api/v1.
    second = api.get(following.removeprefix("/api/v1"), headers=headers)
    assert [m["id"] for m in second.json()] == [team[0]]
    assert "link" not in second.headers


@pytest.mark.parametrize(
    ("patch", "rule"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(16)}}, "17 pairs"),
        ({"metadata": {"a key": "v"}}, "is not allowed"),
        ({"metadata": {"name": 3}}, "metadata.name"),
        ({"task": "regression"}, "task"),
    ],
)
def test_a_bad_change_to_a_model_is_a_422_that_changes_nothing(api, patch, rule):
    headers = register(api)
    model_id = _fit(api, headers, {"name": "churn"})["model_id"]
    refused = api.patch(f"/models/{model_id}", json=patch, headers=headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "validation_error"
    assert rule in refused.json()["detail"], refused.json()["detail"]
    assert api.get(f"/models/{model_id}", headers=headers).json()["metadata"] == {"name": "churn"}


def test_only_the_owner_changes_a_models_labels(api):
    headers = register(api)
    fit = _fit(api, headers, {"name": "churn"})
    body = {"metadata": {"name": "stolen"}}
    foreign = api.patch(f"/models/{fit['model_id']}", json=body, headers=register(api))
    assert (foreign.status_code, foreign.json()["code"]) == (404, "model_not_found")
    assert api.patch(f"/models/{fit['model_id']}", json=body).status_code == 401
    bad_filter = api.get("/models?metadata=name", headers=headers)
    assert (bad_filter.status_code, bad_filter.json()["code"]) == (422, "validation_error")
    wait_for_job(api, headers, fit["id"])
    model = api.get(f"/models/{fit['model_id']}", headers=headers).json()
    assert model["metadata"] == {"name": "churn"}
