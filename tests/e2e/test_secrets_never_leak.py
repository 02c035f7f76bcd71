"""No secret in logs, data at rest, Redis or responses after creation.

Runs a full flow with failures, then searches every log line the stack wrote
(at DEBUG), a dump of every database row, and every Redis key and message,
for each API key, webhook secret and TabPFN token the suite handed out, and
for SECRET_KEY.
"""

from __future__ import annotations

import redis
from sqlalchemy import create_engine, inspect, text

from shared.core.redis_client import redis_py_url
from tests.support.api import register, wait_for_job
from tests.support.tokens import ISSUED_SECRETS, SECRET_KEY, TOKENS

TRAIN = {"X": [[1.0], [2.0], [3.0], [4.0]], "y": ["a", "a", "b", "b"]}


def _fit(api, headers) -> dict:
    job = api.post("/jobs/fit", json={"task": "classification", "train": TRAIN}, headers=headers)
    return wait_for_job(api, headers, job.json()["id"])


def _full_flow(api, stack, emulator_knobs) -> None:
    headers = register(api, "alice-token")
    fit = _fit(api, headers)
    wait_for_job(
        api,
        headers,
        api.post(
            "/jobs/predict",
            json={"model_id": fit["model_id"], "X": [[1.5]], "output": "probabilities"},
            headers=headers,
        ).json()["id"],
    )
    api.post("/auth/keys", headers=headers)
    api.put("/auth/tabpfn-token", json={"tabpfn_token": "wrong-token"}, headers=headers)
    api.post("/auth/setup", json={"tabpfn_token": "bad-token"})
    api.get("/jobs", headers={"Authorization": "Bearer tpa_0123456789abcdef_" + "y" * 43})
    # A key pasted into a mistyped route, and into the console's: the path of a
    # route that matched nothing was logged as sent.
    key = headers["Authorization"].removeprefix("Bearer ")
    assert api.get(f"/keys/{key}", headers=headers).status_code == 404
    webhook_secret = next(s for s in ISSUED_SECRETS if s.startswith("whsec_"))
    api.get(f"{stack.api_url}/console/{key}/{webhook_secret}")
    emulator_knobs(revoked_tokens=["alice-token"])
    failed = _fit(api, headers)
    assert failed["error"]["code"] == "upstream_auth_failed"


def _secrets() -> list[str]:
    return [*ISSUED_SECRETS, *TOKENS, SECRET_KEY]


def _find(blob: str, where: str) -> list[str]:
    found = []
    for secret in _secrets():
        if secret in blob or secret.encode().hex() in blob:
            found.append(f"{where}: {secret[:8]}…")
    return found


def test_no_secret_in_logs_database_or_redis(api, stack, emulator_knobs):
    _full_flow(api, stack, emulator_knobs)
    assert len(ISSUED_SECRETS) >= 2
    assert _find(f"a line with {ISSUED_SECRETS[-1]} in it", "probe")  # the search can find

    leaks = []
    for process in stack.processes:
        if process.name == "emulator":
            continue  # the upstream stand-in, not our service
        log = process.log()
        assert log, f"{process.name} wrote no log?"
        leaks += _find(log, f"{process.name}.log")

    engine = create_engine(stack.env["DATABASE_URL"])
    with engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            rows = connection.execute(text(f'select t::text from "{table}" t')).scalars().all()
            leaks += _find("\n".join(rows), f"table {table}")
    engine.dispose()

    client = redis.Redis.from_url(redis_py_url(stack.env["REDIS_URL"]))
    dump = []
    for key in client.scan_iter():
        kind = client.type(key).decode()
        value = {
            "string": lambda k: client.get(k),
            "list": lambda k: client.lrange(k, 0, -1),
            "hash": lambda k: client.hgetall(k),
            "set": lambda k: client.smembers(k),
            "zset": lambda k: client.zrange(k, 0, -1),
        }.get(kind, lambda k: b"")(key)
        dump.append(f"{key!r} {value!r}")
    leaks += _find("\n".join(dump), "redis")
    assert leaks == []
