"""Setup with a token that already has an account recovers it (a new key, same
user, its models and jobs); one token belongs to one account."""

from __future__ import annotations

import hashlib
import hmac
import subprocess

import httpx

from cli.supervisor import BIN
from tests.support.api import register, wait_for_job
from tests.support.tokens import SECRET_KEY, fresh_token

FIT = {"task": "classification", "train": {"X": [[1.0], [2.0], [3.0], [4.0]], "y": [0, 0, 1, 1]}}


def _setup(api, token: str) -> dict:
    response = api.post("/auth/setup", json={"tabpfn_token": token})
    assert response.status_code == 201, response.text
    return response.json()


def _auth(account: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {account['api_key']}"}


def test_setup_again_with_the_same_token_recovers_the_account(api):
    token = fresh_token()
    first = _setup(api, token)
    assert first["account"] == "new"
    job = wait_for_job(
        api, _auth(first), api.post("/jobs/fit", json=FIT, headers=_auth(first)).json()["id"]
    )
    assert job["status"] == "succeeded", job

    # The API key is lost: setting up again with the token finds the account.
    again = _setup(api, token)
    assert again["account"] == "existing"
    assert again["user_id"] == first["user_id"]
    assert again["api_key"] != first["api_key"] and again["key_id"] != first["key_id"]
    # The same webhook secret: receivers keep verifying events.
    assert again["webhook_secret"] == first["webhook_secret"]
    # The jobs and the model are there under the new key; the old key still works.
    listed = api.get("/jobs", headers=_auth(again)).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert api.get(f"/models/{job['model_id']}", headers=_auth(again)).status_code == 200
    assert api.get("/auth/me", headers=_auth(first)).json()["active_keys"] == 2

    # Another token is another account.
    other = _setup(api, fresh_token())
    assert (other["account"], other["user_id"] != first["user_id"]) == ("new", True)


def test_a_token_of_another_account_is_refused_and_a_new_one_moves(api):
    owner, mover = register(api), register(api)
    owner_token = fresh_token()
    assert (
        api.put("/auth/tabpfn-token", json={"tabpfn_token": owner_token}, headers=owner).status_code
        == 204
    )

    taken = api.put("/auth/tabpfn-token", json={"tabpfn_token": owner_token}, headers=mover)
    assert (taken.status_code, taken.json()["code"]) == (409, "tabpfn_token_in_use")
    assert owner_token not in taken.text
    # Setting one's own token again is fine.
    assert (
        api.put("/auth/tabpfn-token", json={"tabpfn_token": owner_token}, headers=owner).status_code
        == 204
    )

    # The fingerprint follows the token: setup with the new one finds the account.
    owner_id = api.get("/auth/me", headers=owner).json()["user_id"]
    found = _setup(api, owner_token)
    assert (found["account"], found["user_id"]) == ("existing", owner_id)


def _account_from_before_fingerprints(api, stack) -> tuple[str, dict]:
    """An account whose row has no fingerprint, as the migration leaves a row that
    existed before it; its token and its setup answer."""
    token = fresh_token()
    first = _setup(api, token)
    stack.sql(
        "UPDATE users SET tabpfn_token_fingerprint = NULL WHERE id = :id RETURNING id",
        id=first["user_id"],
    )
    return token, first


def test_rows_from_before_fingerprints_are_found_and_filled(api, stack):
    token, first = _account_from_before_fingerprints(api, stack)
    again = _setup(api, token)
    assert (again["account"], again["user_id"]) == ("existing", first["user_id"])
    [(fingerprint,)] = stack.sql(
        "SELECT tabpfn_token_fingerprint FROM users WHERE id = :id", id=first["user_id"]
    )
    assert fingerprint and len(fingerprint) == 64 and token not in fingerprint


def _fingerprint(token: str, secret_key: str) -> str:
    # shared.accounts.security.token_fingerprint, spelled out: the formula is a contract
    # (per-token pacing keys on it too).
    key = hashlib.sha256(b"tabpfn-api/token-fingerprint/" + secret_key.encode()).digest()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def test_fingerprints_of_an_older_secret_key_are_found_and_rekeyed(api, stack, tmp_path):
    token = fresh_token()
    first = _setup(api, token)
    [(stored,)] = stack.sql(
        "SELECT tabpfn_token_fingerprint FROM users WHERE id = :id", id=first["user_id"]
    )
    assert stored == _fingerprint(token, SECRET_KEY)
    # Between putting a new key first and running rotate-secret, rows carry
    # fingerprints of a key that is now second.
    stack.sql(
        "UPDATE users SET tabpfn_token_fingerprint = :fp WHERE id = :id RETURNING id",
        fp=_fingerprint(token, "older-key"), id=first["user_id"],
    )  # fmt: skip
    with stack.extra_api("api-two-keys", tmp_path, SECRET_KEY=f"{SECRET_KEY},older-key") as (
        url,
        _,
    ):
        response = httpx.post(f"{url}/auth/setup", json={"tabpfn_token": token}, timeout=30)
    assert response.status_code == 201, response.text
    assert (response.json()["account"], response.json()["user_id"]) == (
        "existing",
        first["user_id"],
    )
    [(rekeyed,)] = stack.sql(
        "SELECT tabpfn_token_fingerprint FROM users WHERE id = :id", id=first["user_id"]
    )
    assert rekeyed == _fingerprint(token, SECRET_KEY)


def test_rotate_secret_fills_missing_fingerprints(api, stack):
    token, first = _account_from_before_fingerprints(api, stack)
    # The stack's own key: re-encrypting with it changes nothing for the other tests.
    rotated = subprocess.run(
        [str(BIN), "rotate-secret"], env=stack.env, capture_output=True, text=True, timeout=120
    )
    assert rotated.returncode == 0, rotated.stderr
    [(filled,)] = stack.sql(
        "SELECT tabpfn_token_fingerprint FROM users WHERE id = :id", id=first["user_id"]
    )
    assert filled == _fingerprint(token, SECRET_KEY)
