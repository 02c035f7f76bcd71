"""The baseline: the same fit + predict made directly with tabpfn-client.

Runs as its own process (`python -m bench.direct URL TOKEN`), because the
client reads TABPFN_CLIENT_API_URL when it is imported. The benchmark sends
one JSON command per line on stdin and reads one JSON answer per line; the
client's own prints go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from bench.data import make_table
from bench.memory import memory_kb, reset_peak_memory

SYSTEMS = ["preprocessing", "text"]  # what TabPFNClassifier sends, and the worker too
# Each call's timeout, against tabpfn-client's 900 s. Twice in these sessions (17 and 21)
# one call of the 64- or 32-thread rounds got no answer from the emulator until a
# debugger attached to a process woke it, 8-11 minutes later, voiding its round
# (bench/ANALYSIS.md, session 21). A call here takes seconds; after this long it is
# ended and tabpfn-client sends it again, and the job counts as stalled.
CALL_TIMEOUT_S = 120.0
STALLED_S = 60.0


class Direct:
    def __init__(self, token: str) -> None:
        from tabpfn_client import api_models
        from tabpfn_client.client import ServiceClient
        from tabpfn_client.models import ClientOptions

        self.models = api_models
        self.client = ServiceClient
        self.options = ClientOptions(
            headers={"Authorization": f"Bearer {token}"}, timeout=CALL_TIMEOUT_S
        )

    def fit_predict(self, table) -> np.ndarray:
        from tabpfn_client.estimator import _clean_text_features

        m = self.models
        fit = self.client.fit_with_result(
            _clean_text_features(table.X),
            table.y,
            task_config=m.ClassifierFitTaskConfig(tabpfn_config=m.ClassifierTabPFNConfig()),
            tabpfn_systems=SYSTEMS,
            client_options=self.options,
        )
        prediction = self.client.predict(
            fit.fitted_train_set_id,
            _clean_text_features(table.X_test),
            task_config=m.ClassifierConfig(
                tabpfn_config=m.ClassifierTabPFNConfig(),
                predict_params=m.ClassifierPredictParams(output_type="probas"),
            ),
            client_options=self.options,
        )
        return np.asarray(prediction.y_pred, dtype=float)


class Retries:
    """Fit-predicts sent again after a connection failed under them, and those that took
    over STALLED_S (counted, reported)."""

    count = 0
    stalled = 0
    lock = threading.Lock()


def _timed(direct: Direct, table) -> tuple[float, list]:
    """One fit-predict's seconds; a transport error is retried once, its time included.

    tabpfn-client shares one httpx client between threads. With 64 threads it
    failed a call once in many runs ("ReadError: Bad file descriptor"); a user
    would send the job again, and one failure should not void the whole run.
    The service's worker retries such errors too (shared/upstream/faults.py).
    """
    start = time.perf_counter()
    try:
        probabilities = direct.fit_predict(table)
    except httpx.TransportError:
        with Retries.lock:
            Retries.count += 1
        probabilities = direct.fit_predict(table)
    seconds = time.perf_counter() - start
    if seconds > STALLED_S:
        with Retries.lock:
            Retries.stalled += 1
    return seconds, probabilities


def handle(direct: Direct, command: dict) -> dict:
    shape = command.get("shape", {})
    op = command["op"]
    if op == "fit_predict":
        table = make_table(command["seed"], **shape)
        if command.get("measure_memory"):
            reset_peak_memory(os.getpid())
            rss_before = memory_kb(os.getpid())["VmRSS"]
        seconds, probabilities = _timed(direct, table)
        answer = {"seconds": seconds}
        if command.get("measure_memory"):
            answer["memory_kb"] = {"rss_before": rss_before, **memory_kb(os.getpid())}
        if command.get("return_probabilities"):
            answer["probabilities"] = probabilities.tolist()
        return answer
    if op == "throughput":
        tables = [make_table(seed, **shape) for seed in command["seeds"]]
        retries, stalled = Retries.count, Retries.stalled
        start = time.perf_counter()
        with ThreadPoolExecutor(command["threads"]) as pool:
            latencies = [s for s, _ in pool.map(lambda t: _timed(direct, t), tables)]
        return {
            "seconds": time.perf_counter() - start,
            "latencies": latencies,
            "retries": Retries.count - retries,
            "stalled": Retries.stalled - stalled,
        }
    if op == "pid":
        return {"pid": os.getpid()}
    raise ValueError(f"unknown op {op!r}")


def cold(url: str, token: str, seeds: list[int], shape: dict) -> None:
    """A fresh process's first fit + predicts, cold import included: one JSON line out.

    `python -m bench.direct --cold URL TOKEN SHAPE_JSON SEED...`; the parent times
    the whole process from spawn, this splits it.
    """
    started = time.perf_counter()
    os.environ["TABPFN_CLIENT_API_URL"] = url
    sys.stdout, answers = sys.stderr, sys.stdout
    direct = Direct(token)  # imports tabpfn_client
    imported = time.perf_counter()
    seconds = []
    for seed in seeds:
        seconds.append(_timed(direct, make_table(seed, **shape))[0])
    answers.write(
        json.dumps({"import_s": imported - started, "calls_s": seconds, "pid": os.getpid()}) + "\n"
    )


def main() -> None:
    if sys.argv[1] == "--cold":
        url, token, shape = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
        cold(url, token, [int(s) for s in sys.argv[5:]], shape)
        return
    url, token = sys.argv[1], sys.argv[2]
    os.environ["TABPFN_CLIENT_API_URL"] = url  # before tabpfn_client is imported
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    direct = Direct(token)
    direct.client.get_settings()  # cached for an hour, as in every worker process
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "exit":
            break
        try:
            answers.write(json.dumps(handle(direct, command)) + "\n")
        except Exception as exc:  # the benchmark reports it and stops
            answers.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")


if __name__ == "__main__":
    main()
