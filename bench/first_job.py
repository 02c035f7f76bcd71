"""Section 1c: the caller's cold start. A fresh process's first job, service against direct.

Sections 1 and 2 compare warm callers: the direct side is a process that has
imported tabpfn-client and called the upstream before. A script, a pipeline
step, a cron job or a notebook's first cell starts cold instead: it imports
tabpfn-client (pandas, scikit-learn, its models) and makes its first calls,
which fetch the upstream's settings. Through the service the caller needs only
an HTTP request; the cold start is the worker's, paid once per node before its
first job (section 6).

Each trial runs four fresh processes (bench/fresh/), each reading the same kind
of JSON file from disk:
- direct: tabpfn-client's `TabPFNClassifier`, fit then predict_proba;
- the service with one `curl` request, `POST /jobs/fit-predict?wait=60`;
- the service with the Python SDK: `Client.fit_predict(..., wait=60)` (one job in
  one request), and the scikit-learn `RemoteTabPFNClassifier` (a fit job, then a
  predict job, each submit waiting for its job).
Each time runs from the spawn to the result, by one clock. The two Python
processes then run a second job, to show what the same process pays once warm.
The stack is the shared, warm one (its own cold start is section 6's subject).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from bench import data
from bench.fleet import log
from bench.stack import DIRECT_TOKEN, BenchStack

FRESH = Path(__file__).with_name("fresh")
SDK_DIR = Path(__file__).resolve().parents[1] / "clients" / "python"
# The same table goes to the direct side and to curl (separate upstream accounts:
# nothing is deduplicated); the SDK's jobs and every second job get tables of
# their own, since the service's upstream account would skip a repeated upload.
SDK_CLIENT_SEEDS, SDK_ESTIMATOR_SEEDS, SECOND_SEEDS = 300_000, 600_000, 900_000
SIDES = ("direct", "curl", "sdk client", "sdk estimator")


def _write_body(directory: Path, seed: int) -> Path:
    path = directory / f"body-{seed}.json"
    path.write_text(json.dumps(data.fit_predict_body(data.make_table(seed, **data.SMALL))))
    return path


def _script(args: list[str], env: dict[str, str]) -> dict:
    """A fresh Python process running a bench/fresh script; its times from the spawn."""
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {done.stderr[-1500:]}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    if any(rows != data.SMALL["test_rows"] for rows in answer["rows"]):
        raise RuntimeError(f"{args[0]}: predictions for {answer['rows']} rows")
    ends = answer["ends"]
    return {
        "first_s": ends[0] - spawned,
        "start_and_imports_s": answer["imported"] - spawned,
        "first_job_s": ends[0] - answer["imported"],
        "second_job_s": ends[1] - ends[0] if len(ends) > 1 else None,
    }


def _curl(api_url: str, api_key: str, body: Path) -> dict:
    spawned = time.time()
    done = subprocess.run(
        [
            "curl", "--silent", "--show-error", "--max-time", "120",
            "--request", "POST", f"{api_url}/api/v1/jobs/fit-predict?wait=60",
            "--header", f"Authorization: Bearer {api_key}",
            "--header", "Content-Type: application/json",
            "--data-binary", f"@{body}",
            "--write-out", "\n%{http_code}",
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    seconds = time.time() - spawned
    answer, _, code = done.stdout.rpartition("\n")
    if done.returncode != 0 or code != "200":
        raise RuntimeError(f"curl: exit {done.returncode}, HTTP {code}: {done.stdout[-500:]}")
    if len(json.loads(answer)["result"]["probabilities"]) != data.SMALL["test_rows"]:
        raise RuntimeError("curl: a result of the wrong length")
    return {"first_s": seconds}


def bench_first_job(stack: BenchStack, api_key: str, *, trials: int, seed_base: int) -> dict:
    """`trials` rounds of the four ways, interleaved, each a fresh process; emulator CPU by side."""
    log(f"1c. a caller's cold start: {trials} fresh processes each way")
    scratch = stack.scratch / "first-job"
    scratch.mkdir(exist_ok=True)
    # The stack's environment (its HOME is a scratch directory: tabpfn-client may
    # keep its token there), as bench/direct.py's process gets it.
    direct_env = {**stack.env, "TABPFN_CLIENT_API_URL": stack.emulator_url}
    sdk_env = {**stack.env, "PYTHONPATH": str(SDK_DIR)}
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    emulator_cpu = dict.fromkeys(SIDES, 0.0)
    for i in range(trials):
        seed = seed_base + i
        paired, direct_second = (_write_body(scratch, seed + s) for s in (0, SECOND_SEEDS))
        ways = {
            "direct": partial(
                _script,
                [str(FRESH / "tabpfn_client_by_hand.py"), DIRECT_TOKEN, str(paired),
                 str(direct_second)],
                direct_env,
            ),
            "curl": partial(_curl, stack.api_url, api_key, paired),
        }  # fmt: skip
        for way, offset in (("client", SDK_CLIENT_SEEDS), ("estimator", SDK_ESTIMATOR_SEEDS)):
            first, second = (_write_body(scratch, seed + offset + s) for s in (0, SECOND_SEEDS))
            command = [str(FRESH / "sdk_by_hand.py"), way, stack.api_url, api_key]
            ways[f"sdk {way}"] = partial(_script, [*command, str(first), str(second)], sdk_env)
        for side, run in ways.items():
            before = stack.emulator_stats()["cpu_s"]
            runs[side].append(run())
            emulator_cpu[side] += stack.emulator_stats()["cpu_s"] - before
    # Fit-predicts per side: two per Python process, one per curl.
    jobs = {side: (1 if side == "curl" else 2) * trials for side in SIDES}
    return {
        "trials": trials,
        "runs": runs,
        "medians": {
            side: {
                key: statistics.median(run[key] for run in runs[side])
                for key in runs[side][0]
                if runs[side][0][key] is not None
            }
            for side in SIDES
        },
        "emulator_cpu_ms_per_job": {side: 1000 * emulator_cpu[side] / jobs[side] for side in SIDES},
    }
