"""A burst far above a TabPFN token's rate limit: every job waits its turn and succeeds.

    tabpfn-api dev                                   # in one terminal
    python examples/paced_burst.py                   # in another

Against the dev stack, this first switches on the emulator's per-token rate
windows (10 fits and 10 predictions per 5-second "minute", where the TabPFN
cloud allows 60 per minute), then submits JOBS fit-predict jobs at once and
shows, every second, how many are queued and why (`waiting.reason`), running
and done. Jobs past the token's window wait, queued and holding no worker
slot, until the window reopens; none fails. The emulator's rate windows are
switched off again at the end.

    API_URL=http://127.0.0.1:8000 TABPFN_TOKEN=demo-token EMULATOR_URL=http://127.0.0.1:8080 \\
    JOBS=30 python examples/paced_burst.py

Against the real TabPFN cloud leave EMULATOR_URL empty: its limits are real.
Needs only `httpx`.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

API_URL = os.environ.get("API_URL", "http://127.0.0.1:8000").rstrip("/")
TABPFN_TOKEN = os.environ.get("TABPFN_TOKEN", "demo-token")
EMULATOR_URL = os.environ.get("EMULATOR_URL", "http://127.0.0.1:8080").rstrip("/")
JOBS = int(os.environ.get("JOBS", "30"))
LIMITS = {
    "rate_limits": True,
    "rate_window_scale": 5 / 60,
    "fits_per_minute": 10,
    "predictions_per_minute": 10,
}
BODY = {
    "task": "classification",
    "train": {"X": [[i, i % 3] for i in range(30)], "y": [i % 2 for i in range(30)]},
    "test": {"X": [[1, 1], [4, 0]]},
}


def check(response: httpx.Response, expect: int) -> dict:
    if response.status_code != expect:
        body = response.json() if response.content else {}
        sys.exit(f"error: {response.status_code} {body.get('code')}: {body.get('detail')}")
    return response.json()


def switch_emulator(knobs: dict) -> None:
    try:
        httpx.patch(f"{EMULATOR_URL}/_emulator/config", json=knobs).raise_for_status()
    except httpx.HTTPError as exc:
        sys.exit(
            f"error: cannot set the emulator's rate windows at {EMULATOR_URL} ({exc}). Set "
            "EMULATOR_URL to the Emulator URL `tabpfn-api dev` printed, or to nothing "
            "against the real TabPFN cloud."
        )


def summary(jobs: list[dict]) -> str:
    counts = Counter(
        f"queued ({j['waiting']['reason']})"
        if j["status"] == "queued" and j.get("waiting")
        else j["status"]
        for j in jobs
    )
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def main() -> None:
    with httpx.Client(base_url=f"{API_URL}/api/v1", timeout=30) as api:
        key = check(api.post("/auth/setup", json={"tabpfn_token": TABPFN_TOKEN}), 201)["api_key"]
        headers = {"Authorization": f"Bearer {key}"}
        if EMULATOR_URL:
            switch_emulator(LIMITS)
        try:
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                ids = list(
                    pool.map(
                        lambda _: check(
                            api.post("/jobs/fit-predict", json=BODY, headers=headers), 202
                        )["id"],
                        range(JOBS),
                    )
                )
            print(f"submitted {len(ids)} jobs in {time.monotonic() - started:.1f}s")
            while True:
                jobs = [check(api.get(f"/jobs/{i}", headers=headers), 200) for i in ids]
                print(f"{time.monotonic() - started:5.1f}s  {summary(jobs)}", flush=True)
                if all(j["status"] in ("succeeded", "failed", "canceled") for j in jobs):
                    break
                time.sleep(1)
        finally:
            if EMULATOR_URL:
                switch_emulator({"rate_limits": False})
    failed = [j for j in jobs if j["status"] != "succeeded"]
    print(
        f"done in {time.monotonic() - started:.1f}s: {len(jobs) - len(failed)} succeeded, "
        f"{len(failed)} did not"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
