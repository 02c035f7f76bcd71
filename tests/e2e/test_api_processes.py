"""API_PROCESSES=2 (as docker-compose runs the API): two processes on one port serve jobs.

Real processes (emulator, API, worker), the real tabpfn-client. Each API process
has its own job-change subscription, so a long-poll answers the moment its job
ends whichever process took the request.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.api import register
from tests.support.stacks import SMALL_FIT_PREDICT, api_client, own_stack
from tests.support.tokens import FRESH_TOKENS


def _python_children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if "python" in Path(f"/proc/{child}/exe").resolve().name:
                found.append(int(child))
    return found


def test_two_api_processes_serve_submits_long_polls_and_results(services, tmp_path, request):
    with (
        own_stack(
            services,
            tmp_path,
            tokens=FRESH_TOKENS,
            # A slot for each client's job: the waits below are the jobs' runs, not a
            # queue's (two slots took 12 jobs of 0.8 s past the 5-s timer on a busy machine).
            worker_args=("--concurrency", "6"),
            API_PROCESSES="2",
            EMULATOR_LATENCY_S="0.2",
        ) as stack,
        api_client(stack, request) as api,
    ):
        api_process = next(p for p in stack.processes if p.name == "api")
        # uvicorn's supervisor and its two serving processes (multiprocessing may
        # add a helper of its own, so at least two).
        assert len(_python_children(api_process.popen.pid)) >= 2

        headers = register(api)

        def one_job(_: int) -> tuple[dict, float]:
            # A connection per job: requests spread over both processes.
            with httpx.Client(base_url=f"{stack.api_url}/api/v1", timeout=60) as own:
                job = own.post("/jobs/fit-predict", json=SMALL_FIT_PREDICT, headers=headers)
                assert job.status_code == 202, job.text
                started = time.monotonic()
                done = own.get(f"/jobs/{job.json()['id']}", params={"wait": 30}, headers=headers)
                waited = time.monotonic() - started
                result = own.get(f"/jobs/{job.json()['id']}/result", headers=headers)
                assert result.status_code == 200, result.text
                assert len(result.json()["predictions"]) == 2
                return done.json(), waited

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(one_job, range(12)))
        assert all(job["status"] == "succeeded" for job, _ in outcomes), outcomes
        # Answered by the job-change message, not by the 5-s re-check timer.
        assert all(waited < 5 for _, waited in outcomes), [w for _, w in outcomes]
