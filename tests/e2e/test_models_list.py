"""GET /models: every model of the caller, newest first, or pages of them (?limit,
?before) linked by a `Link: <...>; rel="next"` header."""

from __future__ import annotations

import re
import uuid

from tests.support.api import register, wait_for_job

FIT = {
    "task": "classification",
    "train": {"X": [[float(i)] for i in range(6)], "y": ["a"] * 3 + ["b"] * 3},
}


def _next(response) -> str | None:
    link = response.headers.get("Link")
    if link is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert match, link
    return match.group(1)


def _fit_models(api, headers, count: int) -> list[str]:
    """`count` models, fitted one after another: their ids, oldest first."""
    fitted = []
    for _ in range(count):
        job_id = api.post("/jobs/fit", json=FIT, headers=headers).json()["id"]
        fitted.append(wait_for_job(api, headers, job_id)["model_id"])
    return fitted


def test_pages_of_models_follow_each_other_newest_first(api, stack):
    headers = register(api)
    fitted = _fit_models(api, headers, 5)
    newest_first = fitted[::-1]

    everything = api.get("/models", headers=headers)
    assert [m["id"] for m in everything.json()] == newest_first
    assert _next(everything) is None  # no limit: one answer, no pages

    seen, url = [], "/models?limit=2"
    pages = 0
    while url is not None:
        # The link is the path under the API's root, as any HTTP client resolves it.
        response = api.get(url.removeprefix("/api/v1"), headers=headers)
        assert response.status_code == 200, response.text
        assert len(response.json()) <= 2
        seen += [m["id"] for m in response.json()]
        url, pages = _next(response), pages + 1
    assert seen == newest_first
    assert pages == 3  # 2 + 2 + 1: the last page links to nothing

    exact = api.get("/models", params={"limit": 5}, headers=headers)
    assert len(exact.json()) == 5 and _next(exact) is None  # no empty page after a full last one


def test_a_cursor_that_is_not_the_callers_model_is_404_and_a_bad_limit_422(api, stack):
    owner, stranger = register(api), register(api)
    job_id = api.post("/jobs/fit", json=FIT, headers=owner).json()["id"]
    model_id = wait_for_job(api, owner, job_id)["model_id"]
    for before in (model_id, str(uuid.uuid4())):
        response = api.get("/models", params={"limit": 1, "before": before}, headers=stranger)
        assert (response.status_code, response.json()["code"]) == (404, "model_not_found")
    for limit in (0, 1001):
        response = api.get("/models", params={"limit": limit}, headers=owner)
        assert response.status_code == 422, response.text
    assert api.get("/models", params={"before": model_id}, headers=owner).json() == []


def test_pages_follow_on_when_the_models_of_a_page_are_deleted(api, stack):
    """The cleanup loop: list a page, delete its models, follow the Link."""
    headers = register(api)
    fitted = _fit_models(api, headers, 3)
    first = api.get("/models", params={"limit": 2}, headers=headers)
    assert [m["id"] for m in first.json()] == fitted[:0:-1]
    for model in first.json():
        assert api.delete(f"/models/{model['id']}", headers=headers).status_code == 204
    following = api.get(_next(first).removeprefix("/api/v1"), headers=headers)
    assert following.status_code == 200, following.text  # was 404: its anchor was gone
    assert [m["id"] for m in following.json()] == [fitted[0]]
    mangled = api.get("/models", params={"limit": 1, "before": "x_1"}, headers=headers)
    assert (mangled.status_code, mangled.json()["code"]) == (422, "validation_error")
