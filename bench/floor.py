"""The architecture's floor: what the fewest steps of DESIGN.md's path add to a job.

The service's path for a job is: a JSON submit over HTTP to an API process, its
tables checked and stored as Parquet in PostgreSQL, a wake-up through Redis, a
worker slot that claims the row, reads and decodes the tables and makes
tabpfn-client's calls, the result stored in PostgreSQL, the end published, and the
caller's long-poll answered with the result. This module builds that path and
nothing else, to measure what the path itself costs on this machine:

- an API (Starlette on uvicorn with httptools and uvloop, as the service): the
  same table checks and Parquet encode as the service (shared/tables/payloads.py),
  one INSERT of the row and both tables, a push onto a Redis list; a long-poll that
  subscribes to the job's end, then reads the result;
- a worker process of 8 threads: BRPOP, a claiming UPDATE that returns the tables,
  the service's decode, the same tabpfn-client calls as the direct side
  (bench/direct.py), an UPDATE that stores the result, a PUBLISH.

Left out, on purpose: authentication, Celery (and with it Flower), the scheduler
(round-robin, caps, pacing), leases and heartbeats, stages, idempotency,
webhooks, the ORM, logging, every error path. Each one is what the service
promises beyond the path; their sum is what the service adds above this floor.

`python -m bench.floor` starts the bench's stack (bench/stack.py), this floor
beside it, and the direct client, then runs fit-predicts one at a time,
interleaved: direct, service, floor. The service's and the floor's latencies are
reported against the direct one's, at each upstream call time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from bench.service import JobTiming

_SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_jobs (
    id uuid PRIMARY KEY,
    status text NOT NULL,
    train bytea NOT NULL,
    test bytea NOT NULL,
    result bytea,
    started_at timestamptz,
    finished_at timestamptz
)"""
_WAKE = "floor:wake"
_WORKER_READY = "floor worker ready"


def _end_channel(job_id: str) -> str:
    return f"floor:end:{job_id}"


def _statement(database, sql: str, args: tuple) -> tuple | None:
    """One statement in a transaction of its own on a pooled connection; its first row."""
    connection = database.getconn()
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            row = cursor.fetchone() if cursor.description else None
        connection.commit()
        return row
    finally:
        database.putconn(connection)


# ---------------------------------------------------------------- the API


def create_api():
    """The floor's API: POST /jobs, GET /jobs/{id}/result?wait=S (a Starlette app)."""
    import orjson
    import psycopg2
    import psycopg2.pool
    import redis
    import redis.asyncio
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    from shared.tables.payloads import (
        TARGET_COLUMN,
        encode_table,
        labels_from_json,
        table_from_json,
    )

    database = psycopg2.pool.ThreadedConnectionPool(1, 8, os.environ["FLOOR_DATABASE_URL"])
    broker = redis.Redis.from_url(os.environ["FLOOR_REDIS_URL"])
    listener = redis.asyncio.Redis.from_url(os.environ["FLOOR_REDIS_URL"])

    statement = functools.partial(_statement, database)

    def accept(body: dict) -> str:
        train = table_from_json(body["train"]["X"], body["train"].get("columns"), name="train")
        labels = labels_from_json(body["train"]["y"], task="classification", n_rows=len(train))
        train[TARGET_COLUMN] = labels.to_numpy()
        test = table_from_json(body["test"]["X"], body["test"].get("columns"), name="test")
        train_bytes, test_bytes = encode_table(train).read(), encode_table(test).read()
        job_id = str(uuid.uuid4())
        statement(
            "INSERT INTO floor_jobs (id, status, train, test) VALUES (%s, 'queued', %s, %s)",
            (job_id, psycopg2.Binary(train_bytes), psycopg2.Binary(test_bytes)),
        )
        broker.lpush(_WAKE, job_id)
        return job_id

    async def submit(request) -> Response:
        body = orjson.loads(await request.body())
        job_id = await run_in_threadpool(accept, body)
        return Response(orjson.dumps({"id": job_id}), 202, media_type="application/json")

    def read_result(job_id: str) -> tuple | None:
        return statement("SELECT status, result FROM floor_jobs WHERE id = %s", (job_id,))

    async def result(request) -> Response:
        job_id = request.path_params["job_id"]
        wait = float(request.query_params.get("wait", "0"))
        async with listener.pubsub() as pubsub:
            await pubsub.subscribe(_end_channel(job_id))  # before the look: no end missed
            status, stored = await run_in_threadpool(read_result, job_id)
            deadline = time.monotonic() + wait
            while status != "succeeded" and time.monotonic() < deadline:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=deadline - time.monotonic()
                )
                if message is not None:
                    status, stored = await run_in_threadpool(read_result, job_id)
        if status != "succeeded":
            return Response(b'{"status":"%s"}' % status.encode(), 409)
        return Response(bytes(stored), 200, media_type="application/json")

    async def ready(_request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[
            Route("/", ready),
            Route("/jobs", submit, methods=["POST"]),
            Route("/jobs/{job_id}/result", result, methods=["GET"]),
        ]
    )


# ---------------------------------------------------------------- the worker


def run_worker(token: str, threads: int) -> None:
    """The floor's worker: `threads` slots, each BRPOP → claim → run → store → publish."""
    import numpy as np
    import orjson
    import psycopg2
    import psycopg2.pool
    import redis

    from bench.direct import Direct
    from shared.tables.payloads import decode_table, split_train

    database = psycopg2.pool.ThreadedConnectionPool(1, threads, os.environ["FLOOR_DATABASE_URL"])
    broker = redis.Redis.from_url(os.environ["FLOOR_REDIS_URL"])
    direct = Direct(token)
    direct.client.get_settings()  # cached, as every worker process of the service does

    statement = functools.partial(_statement, database)

    class Table:  # what Direct.fit_predict reads
        def __init__(self, X, y, X_test) -> None:
            self.X, self.y, self.X_test = X, y, X_test

    def slot() -> None:
        while True:
            popped = broker.brpop([_WAKE], timeout=1)
            if popped is None:
                continue
            job_id = popped[1].decode()
            claimed = statement(
                "UPDATE floor_jobs SET status = 'running', started_at = now() "
                "WHERE id = %s AND status = 'queued' "
                "RETURNING train, test",
                (job_id,),
            )
            if claimed is None:
                continue
            X, y = split_train(decode_table(bytes(claimed[0])))
            probabilities = direct.fit_predict(Table(X, y.to_numpy(), decode_table(claimed[1])))
            answer = orjson.dumps({"probabilities": np.asarray(probabilities).tolist()})
            statement(
                "UPDATE floor_jobs SET status = 'succeeded', result = %s, finished_at = now() "
                "WHERE id = %s "
                "RETURNING id",
                (psycopg2.Binary(answer), job_id),
            )
            broker.publish(_end_channel(job_id), b"1")

    for _ in range(threads):
        threading.Thread(target=slot, daemon=True).start()
    print(_WORKER_READY, flush=True)
    threading.Event().wait()


# ---------------------------------------------------------------- the measurement


class FloorClient:
    """A caller of the floor's API, as bench.service.ServiceUser calls the service's."""

    def __init__(self, url: str, database_url: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=60)
        self.database_url = database_url

    def fit_predict(self, body: dict) -> tuple[JobTiming, dict]:
        started = time.perf_counter()
        accepted = self.http.post(
            "/jobs", content=json.dumps(body), headers={"content-type": "application/json"}
        )
        accepted.raise_for_status()
        submit_s, submitted_wall = time.perf_counter() - started, time.time()
        job_id = accepted.json()["id"]
        answered = self.http.get(f"/jobs/{job_id}/result", params={"wait": 30})
        answered.raise_for_status()
        timing = JobTiming.answered_now(job_id, started, submit_s, submitted_wall)
        return timing, answered.json()

    def add_server_times(self, timings: list[JobTiming]) -> None:
        """As bench.service.ServiceUser.add_server_times splits a service job."""
        import psycopg2

        with psycopg2.connect(self.database_url) as connection, connection.cursor() as cursor:
            for timing in timings:
                cursor.execute(
                    "SELECT extract(epoch FROM started_at), extract(epoch FROM finished_at) "
                    "FROM floor_jobs WHERE id = %s",
                    (timing.job_id,),
                )
                timing.split(*map(float, cursor.fetchone()))


def start_floor(running, stack: ExitStack, scratch_dir: Path) -> FloorClient:
    """The floor's API and worker on `running`'s database, Redis and emulator (stopped
    by `stack`), and a client of its API."""
    import psycopg2
    from sqlalchemy.engine import make_url

    from bench.stack import SECTION_TOKENS
    from cli.ports import free_port
    from cli.supervisor import start_command, wait_for_http, wait_for_line

    # psycopg2's own URL: the service's names its SQLAlchemy driver.
    url = make_url(running.env["DATABASE_URL"]).set(drivername="postgresql")
    database_url = url.render_as_string(hide_password=False)
    with psycopg2.connect(database_url) as connection:
        connection.cursor().execute(_SCHEMA)
    port = free_port()
    env = {
        **running.env,
        "FLOOR_DATABASE_URL": database_url,
        "FLOOR_REDIS_URL": running.env["REDIS_URL"],
        "TABPFN_CLIENT_API_URL": running.emulator_url,
    }
    root = Path(__file__).resolve().parents[1]
    api = start_command(
        "floor-api",
        [
            *(sys.executable, "-m", "uvicorn", "bench.floor:create_api", "--factory"),
            *("--port", str(port), "--loop", "uvloop", "--http", "httptools"),
            *("--log-level", "warning"),
        ],
        env,
        scratch_dir,
        cwd=root,
    )
    stack.callback(api.stop)
    worker = start_command(
        "floor-worker",
        [sys.executable, "-m", "bench.floor", "--worker", SECTION_TOKENS["floor"]],
        env,
        scratch_dir,
        cwd=root,
    )
    stack.callback(worker.stop)
    wait_for_line(worker, _WORKER_READY)
    wait_for_http(f"http://127.0.0.1:{port}/", api)
    return FloorClient(f"http://127.0.0.1:{port}", database_url)


def measure_on(
    running, user, direct, floor: FloorClient, latencies: list[float], reps: int, seed: int
) -> list[dict]:
    """Direct, service and floor fit-predicts one at a time, interleaved, at each call time;
    the emulator is left at the last one."""
    from bench import data

    rows = []
    for latency in latencies:
        running.set_latency(latency)
        direct_ms: list[float] = []
        timings: dict[str, list[JobTiming]] = {"service": [], "floor": []}
        for rep in range(reps + 5):  # the first five of each way warm it up
            seed += 1
            table = data.make_table(seed, **data.SMALL)
            direct_s = direct.ask(op="fit_predict", seed=seed, shape=data.SMALL)["seconds"]
            service = user.fit_predict(table)[0]
            floor_timing = floor.fit_predict(data.fit_predict_body(table))[0]
            if rep >= 5:
                direct_ms.append(direct_s * 1000)
                timings["service"].append(service)
                timings["floor"].append(floor_timing)
        user.add_server_times(timings["service"])
        floor.add_server_times(timings["floor"])
        rows.append(
            {
                "latency_s": latency,
                "reps": reps,
                "direct_ms": statistics.median(direct_ms),
                **{way: _parts_ms(found) for way, found in timings.items()},
            }
        )
    return rows


def measure(latencies: list[float], reps: int) -> list[dict]:
    """`python -m bench.floor`: the bench's stack, the floor beside it, the direct client."""
    from bench.__main__ import DirectProcess
    from bench.service import ServiceUser
    from bench.stack import SERVICE_TOKEN, Settings, start_stack

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tabpfn-floor-") as scratch:
        scratch_dir = Path(scratch)
        settings = Settings(
            latency_s=latencies[0],
            worker_concurrency=8,
            emulator_max_rows=100_000,
            max_request_bytes=50 * 2**20,
        )
        running = start_stack(stack, scratch_dir, settings)
        floor = start_floor(running, stack, scratch_dir)
        user = ServiceUser.register(running.api_url, SERVICE_TOKEN)
        direct = DirectProcess(running.emulator_url, running.env, stack)
        rows = measure_on(running, user, direct, floor, latencies, reps, seed=90_000)
    for row in rows:
        print(row_text(row))
    return rows


_PARTS = ("total", "submit", "queue", "run", "notify")


def _parts_ms(timings: list[JobTiming]) -> dict[str, float]:
    """Medians of each part of the jobs, in ms."""
    return {
        part: statistics.median(getattr(t, f"{part}_s") * 1000 for t in timings) for part in _PARTS
    }


def row_text(row: dict) -> str:
    direct = row["direct_ms"]
    lines = [
        f"{row['latency_s'] * 1000:.0f} ms per call, {row['reps']} jobs each way, medians: "
        f"direct {direct:.1f} ms"
    ]
    for way in ("service", "floor"):
        parts = row[way]
        split = ", ".join(f"{part} {parts[part]:.1f}" for part in _PARTS[1:])
        lines.append(
            f"  {way}: +{parts['total'] - direct:.1f} ms ({parts['total'] / direct:.3f}x); "
            f"{split} (run - direct: {parts['run'] - direct:+.1f})"
        )
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        run_worker(sys.argv[2], threads=8)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = measure(args.latency, args.reps)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
