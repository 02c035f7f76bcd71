"""Sampling profiles of the API and the workers with py-spy, summarised by where time goes.

py-spy attaches to the running processes (no code change, no restart) and
writes collapsed stacks; each sample is put in the first category whose
marker appears in its stack. The API is sampled on CPU (idle threads are
left out: what does it burn CPU on?); the workers on wall time inside
`run_job` (idle included: what does a job wait for?).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PY_SPY = Path(sys.executable).parent / "py-spy"
RATE_HZ = 200

# (category, markers): the first category with a marker in the stack wins.
API_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("bcrypt verification", ("verify_api_key", "bcrypt")),
    (
        "idempotency fingerprint of the whole body (no key sent)",
        ("fingerprint (shared/jobs/idempotency",),
    ),
    ("JSON rows → DataFrame + checks (table_from_json)", ("table_from_json", "labels_from_json")),
    ("Parquet encode (encode_table)", ("encode_table",)),
    ("option checks (tabpfn-client config models)", ("_check_options",)),
    ("enqueue (Celery send_task → Redis)", ("send_task", "kombu/")),
    ("Redis (rate limit, publish, pub/sub)", ("redis/",)),
    ("authentication (key + user lookup)", ("authenticate (shared/accounts/users",)),
    ("long-poll / read job (GET /jobs/{id})", ("_read_job", "job_waiter")),
    ("read result (GET /result)", ("get_result (shared/jobs/submit",)),
    ("DB (SQLAlchemy + psycopg2)", ("sqlalchemy/", "psycopg2")),
    (
        "request body: JSON decode + pydantic validation",
        (
            "json/decoder",
            "json/__init__",
            "pydantic",
            "_get_body",
            "request_body_to_args",
            "_validate",
        ),
    ),
    ("response serialization", ("serialize_response", "jsonable_encoder", "render (")),
    # The request log's own call, not its middleware: every request passes through that.
    ("logging", ("logging/", "pythonjsonlogger", "_log_request (api/request_log")),
    (
        "HTTP server + framework (uvicorn, starlette, anyio)",
        ("uvicorn/", "starlette/", "anyio/", "h11", "httptools", "asyncio/"),
    ),
]

WORKER_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    # The test set is decoded in a thread during the fit; this is any wait for it.
    ("waiting for the test set's decode", ("test (worker/runner",)),
    # Before the upstream's markers: a read done ahead during the claim is waited for
    # in concurrent.futures, which would otherwise count as upstream HTTP.
    ("read the job (rows, tables, token)", ("_read (worker/runner", "_load (worker/runner")),
    (
        "upstream HTTP: waiting on the emulator (fit, predict, uploads)",
        ("httpx/", "httpcore/", "_upload_to_gcs", "as_completed", "concurrent/futures"),
    ),
    ("tabpfn-client local work (Parquet, hashing, models)", ("tabpfn_client/",)),
    ("text cleaning before upload (_clean_text_features)", ("_clean_text_features",)),
    ("claim the job (DB)", ("claim_next (shared/jobs/scheduling",)),
    # Stage changes are written by the lease thread; starting and stopping it is here.
    ("lease thread start/stop", ("holding (worker/heartbeat",)),
    ("store result + succeed (DB)", ("succeed_job", "session_scope", "sqlalchemy/", "psycopg2")),
    ("Redis publish", ("redis/",)),
    ("shaping the result (as_list, labels)", ("_predict (worker/runner", "as_list")),
    ("logging", ("logging/", "pythonjsonlogger")),
]


@dataclass
class Recording:
    name: str
    process: subprocess.Popen
    out: Path

    def stop(self) -> Counter:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return read_stacks(self.out)


def available() -> bool:
    return PY_SPY.exists() or shutil.which("py-spy") is not None


def record(
    name: str, pid: int, out_dir: Path, *, idle: bool, subprocesses: bool = False
) -> Recording:
    out = out_dir / f"{name}.txt"
    args = [str(PY_SPY if PY_SPY.exists() else "py-spy"), "record", "--pid", str(pid)]
    args += ["--format", "raw", "--output", str(out), "--rate", str(RATE_HZ), "--nonblocking"]
    if idle:
        args.append("--idle")
    if subprocesses:
        args.append("--subprocesses")
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=(out_dir / f"{name}.log").open("w")
    )
    return Recording(name=name, process=process, out=out)


def read_stacks(path: Path) -> Counter:
    stacks: Counter = Counter()
    if not path.exists():
        return stacks
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


# Leaves of threads that wait for work: the event loop's select, idle pool threads.
IDLE_LEAVES = ("EpollSelector.select", "Condition.wait", "_wait_for_tstate_lock", "Event.wait")


def _idle(stack: str) -> bool:
    return stack.rsplit(";", 1)[-1].startswith(IDLE_LEAVES)


def categorise(
    stacks: Counter,
    categories: list[tuple[str, tuple[str, ...]]],
    *,
    within: str | None = None,
    skip_idle: bool = False,
) -> tuple[list[tuple[str, float]], int]:
    """Share of samples per category (of those whose stack contains `within`)."""
    totals: Counter = Counter()
    for stack, count in stacks.items():
        if skip_idle and _idle(stack):
            continue
        if within is not None:
            if within not in stack:
                continue
            stack = stack[stack.index(within) :]
        for category, markers in categories:
            if any(marker in stack for marker in markers):
                totals[category] += count
                break
        else:
            totals["other"] += count
    n = sum(totals.values())
    return [(c, 100.0 * k / n) for c, k in totals.most_common()] if n else [], n


def top_frames(
    stacks: Counter, *, within: str | None = None, skip_idle: bool = False, n: int = 12
) -> list[tuple[str, float]]:
    """The innermost frames that own the most samples (self time)."""
    leaves: Counter = Counter()
    for stack, count in stacks.items():
        if skip_idle and _idle(stack):
            continue
        if within is not None and within not in stack:
            continue
        leaves[stack.rsplit(";", 1)[-1]] += count
    total = sum(leaves.values())
    return [(frame, 100.0 * k / total) for frame, k in leaves.most_common(n)] if total else []
