"""Scheduling through the whole stack: a flood from one user never starves another.

Real processes (emulator, API, a threads-pool worker, beat), the real
tabpfn-client, real PostgreSQL and Redis. The emulator answers every call
after a fixed latency, so a job takes about a second, as a small job does on
the TabPFN cloud.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import register, wait_for_job
from tests.support.stacks import api_client, own_stack
from tests.support.stacks import submit_small as submit

TOKENS = ["flood-token", "small-token"]
SLOTS = 4
CAP = 2


@pytest.fixture(scope="module")
def fair_stack(services, tmp_path_factory):
    with own_stack(
        services,
        tmp_path_factory.mktemp("fair"),
        tokens=TOKENS,
        worker_args=("--concurrency", str(SLOTS)),
        beat=True,
        MAX_RUNNING_PER_USER=str(CAP),
        EMULATOR_LATENCY_S="0.15",
        SWEEPER_INTERVAL_S="2",
    ) as stack:
        yield stack


@pytest.fixture
def client(fair_stack, request):
    with api_client(fair_stack, request) as api:
        yield api


def run_one(api: httpx.Client, headers: dict) -> float:
    started = time.monotonic()
    job = wait_for_job(api, headers, submit(api, headers), timeout=120)
    assert job["status"] == "succeeded", job
    return time.monotonic() - started


def test_a_small_user_is_not_starved_by_a_flood(client, fair_stack):
    flood, small = register(client, "flood-token"), register(client, "small-token")
    idle = min(run_one(client, small) for _ in range(2))

    with ThreadPoolExecutor(8) as pool:
        flood_ids = list(pool.map(lambda _: submit(client, flood), range(30)))
    # The flood is queued far beyond the cap: its jobs wait, and say why.
    time.sleep(1.0)
    shown = [client.get(f"/jobs/{j}", headers=flood).json() for j in flood_ids[-5:]]
    assert {j["status"] for j in shown} == {"queued"}
    reasons = [j["waiting"]["reason"] for j in shown]
    # (A job of theirs may end between two reads: for that moment, they wait for a slot.)
    assert set(reasons) <= {"fair_share", "capacity"} and "fair_share" in reasons, reasons

    # Operators see the same, by reason only (no user ids as labels). A snapshot taken
    # between one of the flood's jobs ending and its next being claimed (milliseconds)
    # rightly counts the flood as waiting for capacity: look a few times.
    for _ in range(20):
        metrics = httpx.get(f"{fair_stack.api_url}/metrics")
        waiting = {
            sample.labels["reason"]: sample.value
            for family in text_string_to_metric_families(metrics.text)
            for sample in family.samples
            if sample.name == "tabpfn_api_jobs_waiting"
        }
        assert set(waiting) == {"capacity", "fair_share", "upstream_rate_limit", "retry_backoff"}
        if waiting["fair_share"] >= 1:
            break
        time.sleep(0.05)
    assert waiting["fair_share"] >= 1, waiting
    assert "tabpfn_api_jobs_running" in metrics.text

    busy = run_one(client, small)

    running = [client.get(f"/jobs/{j}", headers=flood).json()["status"] for j in flood_ids].count(
        "running"
    )
    assert running <= CAP
    # A free slot is there for the small user at once: at most a small multiple of idle.
    assert busy < 3 * idle + 1.0, (busy, idle)
    for job_id in flood_ids:
        assert wait_for_job(client, flood, job_id, timeout=180)["status"] == "succeeded"


# --- pacing against the upstream's rate windows --------------------------------

# A "minute" of 5 s on both sides: the service paces to the limits the emulator
# enforces (10 fits, 10 predictions and 20 uploads per window).
SCALE = str(5 / 60)
PACED_TOKENS = ["burst-token", "clock-burst-token", "bystander-token", "drained-token"]


@pytest.fixture(scope="module")
def paced_stack(services, tmp_path_factory):
    limits = {"FITS_PER_MINUTE": "10", "PREDICTIONS_PER_MINUTE": "10", "UPLOADS_PER_MINUTE": "20"}
    with own_stack(
        services,
        tmp_path_factory.mktemp("paced"),
        tokens=PACED_TOKENS,
        worker_args=("--concurrency", "8"),
        beat=True,
        SWEEPER_INTERVAL_S="2",
        EMULATOR_MODEL="trivial",
        EMULATOR_RATE_LIMITS="true",
        EMULATOR_RATE_WINDOW_SCALE=SCALE,
        UPSTREAM_RATE_WINDOW_SCALE=SCALE,
        **{f"EMULATOR_{name}": value for name, value in limits.items()},
        **{f"UPSTREAM_{name}": value for name, value in limits.items()},
    ) as stack:
        yield stack


@pytest.fixture
def paced(paced_stack, request):
    with api_client(paced_stack, request) as api:
        yield api


def emulator_stats(stack) -> dict:
    return httpx.get(f"{stack.emulator_url}/_emulator/stats").json()


def set_emulator(stack, **knobs) -> None:
    httpx.patch(f"{stack.emulator_url}/_emulator/config", json=knobs).raise_for_status()


@pytest.fixture(params=["first_request", "clock"])
def window_start(request, paced_stack):
    """Where the upstream's fixed windows start: the cloud does not say, so both."""
    set_emulator(paced_stack, rate_window_start=request.param)
    yield request.param
    set_emulator(paced_stack, rate_window_start="first_request")


def test_a_burst_far_above_the_rate_limit_is_paced_and_every_job_succeeds(
    paced, paced_stack, window_start
):
    token = "burst-token" if window_start == "first_request" else "clock-burst-token"
    burst, bystander = register(paced, token), register(paced, "bystander-token")
    idle = run_one(paced, bystander)
    before = emulator_stats(paced_stack)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        job_ids = list(pool.map(lambda _: submit(paced, burst), range(30)))

    # Past the first window's ten, the burst waits for its token's window, holding no slot.
    # Looked at for up to a window and a half: just after a window reopens, the queued
    # jobs read "capacity" until a slot's look finds the new window spent and pauses
    # the token again, and one look at that moment saw only that (a slow machine).
    seen: set[str | None] = set()
    deadline = time.monotonic() + 1.5 * 60 * float(SCALE)
    while "upstream_rate_limit" not in seen and time.monotonic() < deadline:
        time.sleep(0.25)
        seen |= {
            (paced.get(f"/jobs/{j}", headers=burst).json().get("waiting") or {}).get("reason")
            for j in job_ids[-10:]
        }
    assert "upstream_rate_limit" in seen, seen
    usage = paced.get("/usage", headers=burst).json()
    fit_minute = next(
        w for w in usage["rate_windows"] if (w["kind"], w["window"]) == ("fit", "minute")
    )
    assert fit_minute["limit"] == 10 and fit_minute["used"] >= 1

    # Another user's job is not held up by the burst's wait.
    assert run_one(paced, bystander) < 3 * idle + 1.0

    jobs = [wait_for_job(paced, burst, j, timeout=120) for j in job_ids]
    elapsed = time.monotonic() - started
    assert [j["status"] for j in jobs] == ["succeeded"] * 30, [j["error"] for j in jobs]
    assert {j["attempts"] for j in jobs} == {1}, "a wait is not an attempt"
    # 30 fit-predicts at 10 per 5-s window: the third ten start no earlier than two
    # windows (and their margins) after the first, paced, not all at once.
    assert 10 < elapsed < 60, elapsed
    after = emulator_stats(paced_stack)
    throttled = sum(after["http_429"].values()) - sum(before["http_429"].values())
    # Each 429 is a wait, never a failure. The budget is a sliding log: no span of
    # a window holds more than its limit, wherever the upstream's window starts
    # (at the first request, or on the clock).
    # (Counters per clock window met up to 9 here, a few per window edge.) A job's
    # calls leave later than its reservation, by more under load than the margin
    # allows now and then.
    assert throttled <= 3, f"paced to the limit, few 429s: {throttled}"


def test_a_rate_window_429_is_a_wait_and_a_spent_pool_fails_with_its_reset(paced, paced_stack):
    drained = register(paced, "drained-token")
    # The upstream allows fewer fits than the service believes (another program
    # spends the same token): its 429s must make jobs wait, not fail.
    set_emulator(paced_stack, fits_per_minute=3)
    try:
        before = emulator_stats(paced_stack)
        job_ids = [submit(paced, drained) for _ in range(8)]
        jobs = [wait_for_job(paced, drained, j, timeout=120) for j in job_ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 8, [j["error"] for j in jobs]
        assert {j["attempts"] for j in jobs} == {1}
        after = emulator_stats(paced_stack)
        assert after["http_429"].get("fit", 0) > before["http_429"].get("fit", 0), (
            "the upstream did refuse some fits"
        )
    finally:
        set_emulator(paced_stack, fits_per_minute=10)

    # A spent daily token pool is not a window: the job fails at once, with the reset.
    set_emulator(paced_stack, token_pools=True, daily_tokens=1)
    try:
        job = wait_for_job(paced, drained, submit(paced, drained), timeout=60)
    finally:
        set_emulator(paced_stack, token_pools=False)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "upstream_quota_exceeded", job
    assert "resets at" in job["error"]["message"], job
    assert job["attempts"] == 1


def test_the_paced_burst_example_runs_as_documented(paced_stack):
    """examples/paced_burst.py against a stack: every job waits its turn and succeeds."""
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "paced_burst.py"
    done = subprocess.run(
        [sys.executable, str(example)],
        env={
            **paced_stack.env,
            "API_URL": paced_stack.api_url,
            "TABPFN_TOKEN": "drained-token",
            "EMULATOR_URL": paced_stack.emulator_url,
            "JOBS": "24",
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "queued (upstream_rate_limit)" in done.stdout, done.stdout
    assert "24 succeeded, 0 did not" in done.stdout, done.stdout
    # The example turns the emulator's windows off when done; the stack's start-up
    # setting is restored for the tests after it.
    set_emulator(paced_stack, rate_limits=True)
