"""Claim time at scale: shared.jobs.scheduling.claim_next(), 100,000 queued jobs, 1,000 users;
and a few busy users among 20,000 idle accounts (most of a service's accounts are idle).

The parent (`bench_claim`) makes a database of its own, migrates it with the
real command, and runs `python -m bench.claim` with DATABASE_URL, REDIS_URL and
SECRET_KEY set, so the settings, the engine and the Fernet key are the child's
own from its first import, as in a worker. The child fills the database with
one INSERT … SELECT generate_series per table, times claim_next() in-process,
EXPLAINs the candidates query and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from bench.stack import ROOT_DIR, BenchStack
from cli.throwaway import UNPACED, create_database, drop_database, migrate

TOKENS = 8  # a few encrypted tokens, reused: Fernet is not what is measured


def bench_claim(stack: BenchStack, *, jobs: int, users: int, claims: int, idle: int = 0) -> dict:
    print(
        f"[bench {time.strftime('%H:%M:%S')}] claim: {jobs} queued jobs over {users} users"
        + (f", beside {idle} idle accounts" if idle else "")
    )
    url = create_database(stack.admin_database_url)
    try:
        migrate(url)
        env = {
            **stack.env,
            "DATABASE_URL": url,
            # A per-user cap that the claims below cannot reach (200 over 1,000 users
            # never puts 16 on one); the default, to measure the query as deployed.
            "MAX_RUNNING_PER_USER": "16",
            **UNPACED,
        }
        answer = subprocess.run(
            [sys.executable, "-m", "bench.claim", str(jobs), str(users), str(claims), str(idle)],
            cwd=ROOT_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if answer.returncode != 0:
            raise RuntimeError(f"bench.claim failed:\n{answer.stderr[-3000:]}")
        return json.loads(answer.stdout.strip().splitlines()[-1])
    finally:
        drop_database(stack.admin_database_url, url)


def _populate(engine, jobs: int, users: int, idle: int) -> float:
    from sqlalchemy import text

    from shared.accounts.security import encrypt_secret

    tokens = [encrypt_secret(f"claim-bench-token-{i}") for i in range(TOKENS)]
    webhook = encrypt_secret("whsec_claim_bench")
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO users (id, tabpfn_token_encrypted, webhook_secret_encrypted,
                                   last_served_at)
                SELECT gen_random_uuid(), (CAST(:tokens AS bytea[]))[1 + g % :n_tokens],
                       :webhook, now() - random() * interval '1 hour'
                FROM generate_series(0, :users - 1) g
                """
            ),
            {"tokens": tokens, "n_tokens": TOKENS, "webhook": webhook, "users": users},
        )
        # Jobs spread evenly over the users, oldest first, a second apart.
        connection.execute(
            text(
                """
                INSERT INTO jobs (id, user_id, type, status, task, params, attempts,
                                  created_at, updated_at)
                SELECT gen_random_uuid(), u.ids[1 + g % :users], 'fit_predict', 'queued',
                       'classification', '{}'::jsonb, 0,
                       now() - (:jobs - g) * interval '1 second', now()
                FROM generate_series(0, :jobs - 1) g,
                     (SELECT array_agg(id ORDER BY id) AS ids FROM users) u
                """
            ),
            {"jobs": jobs, "users": users},
        )
        # Accounts with no job queued, never served (so first in served order).
        connection.execute(
            text(
                """
                INSERT INTO users (id, tabpfn_token_encrypted, webhook_secret_encrypted)
                SELECT gen_random_uuid(), :token, :webhook FROM generate_series(1, :idle)
                """
            ),
            {"token": tokens[0], "webhook": webhook, "idle": idle},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE users"))
        connection.execute(text("VACUUM ANALYZE jobs"))
    return time.perf_counter() - started


def _explain(engine) -> str:
    from sqlalchemy import text

    from shared.core.config import get_settings
    from shared.jobs.scheduling import _CANDIDATES, CANDIDATES

    with engine.connect() as connection:
        rows = connection.execute(
            text("EXPLAIN (ANALYZE, BUFFERS) " + _CANDIDATES.text),
            {"cap": get_settings().max_running_per_user, "n": CANDIDATES, "skip": []},
        ).all()
    return "\n".join(row[0] for row in rows)


def _time_candidates(engine, n: int) -> list[float]:
    """The candidates query alone, n times on one connection (what grows with the queue)."""
    from shared.core.config import get_settings
    from shared.jobs.scheduling import _CANDIDATES, CANDIDATES

    params = {"cap": get_settings().max_running_per_user, "n": CANDIDATES, "skip": []}
    seconds = []
    with engine.connect() as connection:
        for _ in range(n):
            started = time.perf_counter()
            connection.execute(_CANDIDATES, params).all()
            seconds.append(time.perf_counter() - started)
            connection.rollback()
    return seconds


def main() -> None:
    jobs, users, claims, idle = (int(a) for a in sys.argv[1:5])
    from shared.core.db import get_engine
    from shared.jobs.scheduling import claim_next

    engine = get_engine()
    populate_s = _populate(engine, jobs, users, idle)
    started = time.perf_counter()
    first = claim_next()
    first_s = time.perf_counter() - started
    assert first.claim is not None, "nothing claimed from a full queue"
    seconds = []
    for _ in range(claims):
        started = time.perf_counter()
        pick = claim_next()
        seconds.append(time.perf_counter() - started)
        assert pick.claim is not None
    explain = _explain(engine)
    query = _time_candidates(engine, claims)
    print(
        json.dumps(
            {
                "jobs": jobs,
                "users": users,
                "idle": idle,
                "claims": claims,
                "populate_s": populate_s,
                "first_claim_s": first_s,
                "p50_s": statistics.median(seconds),
                "p99_s": float(np.percentile(seconds, 99)),
                "max_s": max(seconds),
                "query_p50_s": statistics.median(query),
                "query_p99_s": float(np.percentile(query, 99)),
                "explain": explain,
                "pid": os.getpid(),
            }
        )
    )


if __name__ == "__main__":
    main()
