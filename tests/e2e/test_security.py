"""Keys, tokens and limits through the real stack."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import httpx
import pytest

from tests.support.api import register
from tests.support.stacks import extra_api_url
from tests.support.tokens import fresh_token


def _key(headers: dict) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def test_keys_can_be_added_listed_and_revoked_at_once(api):
    headers = register(api)
    me = api.get("/auth/me", headers=headers).json()
    assert me["active_keys"] == 1

    created = api.post("/auth/keys", headers=headers)
    assert created.status_code == 201
    second = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert api.get("/auth/me", headers=second).json()["user_id"] == me["user_id"]
    assert api.get("/auth/me", headers=second).json()["key_id"] == created.json()["key_id"]

    listed = api.get("/auth/keys", headers=headers).json()
    assert {k["id"] for k in listed} == {me["key_id"], created.json()["key_id"]}
    assert all("hash" not in str(k) and "tpa_" not in str(k) for k in listed)

    # The key was just used (and its verification cached): revocation still bites at once.
    assert api.delete(f"/auth/keys/{created.json()['key_id']}", headers=headers).status_code == 204
    refused = api.get("/jobs", headers=second)
    assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")
    again = api.delete(f"/auth/keys/{created.json()['key_id']}", headers=headers)
    assert again.status_code == 404
    last = api.delete(f"/auth/keys/{me['key_id']}", headers=headers)
    assert (last.status_code, last.json()["code"]) == (409, "last_active_key")
    other = register(api)
    assert api.delete(f"/auth/keys/{me['key_id']}", headers=other).status_code == 404


def test_a_key_can_be_named_to_tell_it_apart(api):
    headers = register(api)
    named = api.post("/auth/keys", json={"name": "  nightly-etl "}, headers=headers)
    assert named.status_code == 201, named.text
    assert named.json()["name"] == "nightly-etl"  # trimmed
    unnamed = api.post("/auth/keys", json={}, headers=headers)
    assert (unnamed.status_code, unnamed.json()["name"]) == (201, None)
    listed = {k["id"]: k["name"] for k in api.get("/auth/keys", headers=headers).json()}
    assert listed[named.json()["key_id"]] == "nightly-etl"
    assert listed[unnamed.json()["key_id"]] is None
    assert list(listed.values()).count(None) == 2  # the setup key has no name either

    # A name that is empty, too long, holds a control character, or is not text; an
    # unknown field: 422 naming it, and no key made.
    for body in (
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "tab\there"},
        {"name": 7},
        {"label": "x"},
    ):
        refused = api.post("/auth/keys", json=body, headers=headers)
        assert (refused.status_code, refused.json()["code"]) == (422, "validation_error"), body
        assert "name" in refused.text or "label" in refused.text
    assert len(api.get("/auth/keys", headers=headers).json()) == 3


def test_replacing_the_tabpfn_token_verifies_it_first(api):
    headers = register(api)
    bad = api.put("/auth/tabpfn-token", json={"tabpfn_token": "nope"}, headers=headers)
    assert (bad.status_code, bad.json()["code"]) == (401, "upstream_auth_failed")
    # A token no account holds yet (another account's is refused: test_accounts.py).
    good = api.put("/auth/tabpfn-token", json={"tabpfn_token": fresh_token()}, headers=headers)
    assert good.status_code == 204
    # Upstream calls now go to the new token's account.
    usage = api.get("/usage", headers=headers)
    assert usage.status_code == 200


def test_a_token_that_cannot_travel_in_a_header_is_422(api):
    # Found by the fuzzer: such a token used to reach httpx and fail as a 500.
    for token in ["tok\nen", "tök", "two words"]:
        response = api.post("/auth/setup", json={"tabpfn_token": token})
        assert (response.status_code, response.json()["code"]) == (422, "validation_error")


def test_body_over_max_request_bytes_is_413_before_it_is_read(api, stack):
    headers = register(api)
    big = b'{"task": "classification", "train": {"X": [' + b"[1.0]," * 400_000 + b"[1.0]]}}"
    declared = api.post(
        "/jobs/fit", content=big, headers={**headers, "content-type": "application/json"}
    )
    assert (declared.status_code, declared.json()["code"]) == (413, "payload_too_large")

    def chunks():  # no Content-Length: counted as it streams
        for offset in range(0, len(big), 65536):
            yield big[offset : offset + 65536]

    streamed = httpx.post(
        f"{stack.api_url}/api/v1/jobs/fit",
        content=chunks(),
        headers={**headers, "content-type": "application/json"},
    )
    assert (streamed.status_code, streamed.json()["code"]) == (413, "payload_too_large")
    assert api.get("/jobs", headers=headers).json()["jobs"] == []


@pytest.fixture(scope="module")
def strict_api(stack, tmp_path_factory):
    """An API process with low limits, beside the main one (same database and Redis)."""
    yield from extra_api_url(
        stack, tmp_path_factory, "strict", RATE_LIMIT_PER_MINUTE="5", BAD_AUTH_PER_MINUTE="3"
    )


def test_requests_over_the_key_rate_are_429_with_retry_after(api, strict_api):
    headers = register(api)
    with httpx.Client(base_url=strict_api) as client:
        codes = [client.get("/jobs", headers=headers).status_code for _ in range(7)]
        assert codes[:5] == [200] * 5
        limited = client.get("/jobs", headers=headers)
    assert codes[5:] == [429, 429]
    assert limited.json()["code"] == "rate_limited"
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    # Another key of another user is not affected.
    assert httpx.get(f"{strict_api}/jobs", headers=register(api)).status_code == 200


def test_a_client_guessing_keys_is_slowed_down(api, strict_api):
    # A source address of its own, so this brake does not hold back other tests.
    transport = httpx.HTTPTransport(local_address="127.0.0.9")
    headers = register(api)
    with httpx.Client(base_url=strict_api, transport=transport) as guesser:
        guesses = [
            guesser.get("/jobs", headers={"Authorization": f"Bearer tpa_{i:016x}_{'x' * 43}"})
            for i in range(5)
        ]
        assert [g.status_code for g in guesses[:3]] == [401] * 3
        assert guesses[-1].status_code == 429
        # Braked: even a valid key from this client waits out the window.
        braked = guesser.get("/jobs", headers=headers)
        assert (braked.status_code, braked.json()["code"]) == (429, "rate_limited")
    assert httpx.get(f"{strict_api}/jobs", headers=headers).status_code == 200
    assert _key(headers) not in braked.text


@pytest.fixture(scope="module")
def proxied_api(stack, tmp_path_factory):
    """An API process behind a proxy at 127.0.0.10 (FORWARDED_ALLOW_IPS), low brake."""
    yield from extra_api_url(
        stack, tmp_path_factory, "proxied", BAD_AUTH_PER_MINUTE="3",
        FORWARDED_ALLOW_IPS="127.0.0.10",
    )  # fmt: skip


def test_behind_a_proxy_the_brake_holds_back_the_guessing_client_alone(api, proxied_api):
    """Every request came from the proxy's address: one client sending bad keys braked
    every client behind the proxy, valid keys and all."""
    headers = register(api)
    proxy = httpx.HTTPTransport(local_address="127.0.0.10")
    with httpx.Client(base_url=proxied_api, transport=proxy) as through:
        guesser = {"X-Forwarded-For": "203.0.113.7"}
        for i in range(5):
            bad = {**guesser, "Authorization": f"Bearer tpa_{i:016x}_{'x' * 43}"}
            answered = through.get("/jobs", headers=bad).status_code
        assert answered == 429  # braked: more bad keys than BAD_AUTH_PER_MINUTE
        assert through.get("/jobs", headers={**guesser, **headers}).status_code == 429
        # Another client behind the same proxy is not held back.
        other = through.get("/jobs", headers={"X-Forwarded-For": "203.0.113.8", **headers})
        assert other.status_code == 200, other.text
    # A client that is not the proxy cannot name another address to escape its brake.
    spoofing = httpx.HTTPTransport(local_address="127.0.0.11")
    with httpx.Client(base_url=proxied_api, transport=spoofing) as direct:
        codes = [
            direct.get(
                "/jobs",
                headers={
                    "X-Forwarded-For": f"198.51.100.{i}",
                    "Authorization": f"Bearer tpa_{i:016x}_{'y' * 43}",
                },
            ).status_code
            for i in range(5)
        ]
    assert codes[:3] == [401] * 3 and codes[-1] == 429, codes


def test_two_keys_revoking_each_other_at_once_leave_one_active(api, stack):
    """The last active key cannot be revoked, even when two requests race: each
    revoking the other's key, both used to count two active keys and leave none."""
    raced = 0
    for _ in range(6):  # the race is narrow: a few rounds make the old code lose
        first = register(api)
        second_key = api.post("/auth/keys", headers=first).json()
        second = {"Authorization": f"Bearer {second_key['api_key']}"}
        first_id = api.get("/auth/me", headers=first).json()["key_id"]
        api.get("/auth/me", headers=second)  # both verifications cached: the race is tight
        barrier = Barrier(2)

        def revoke(barrier: Barrier, headers: dict, key_id: str) -> int:
            with httpx.Client(base_url=f"{stack.api_url}/api/v1", timeout=30) as client:
                barrier.wait()
                return client.delete(f"/auth/keys/{key_id}", headers=headers).status_code

        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(revoke, barrier, first, second_key["key_id"])
            b = pool.submit(revoke, barrier, second, first_id)
            codes = sorted([a.result(), b.result()])
        # 409: both were in, and the second found the other's key the last one. 401:
        # one request was over before the other's key was checked (a busy machine
        # serialised them), so no race happened. Never two 204s: no key left.
        assert codes in ([204, 409], [204, 401]), codes
        raced += codes == [204, 409]
        alive = [h for h in (first, second) if api.get("/auth/me", headers=h).status_code == 200]
        assert len(alive) == 1
        assert api.get("/auth/me", headers=alive[0]).json()["active_keys"] == 1
    assert raced, "no round raced: the test did not exercise the lock"
