"""Flower for operators: never open, and it sees our workers and task names."""

from __future__ import annotations

import subprocess
import time

import httpx

from cli.ports import free_port
from cli.supervisor import BIN, start, wait_for_http


def test_flower_refuses_to_start_without_basic_auth(stack):
    env = {k: v for k, v in stack.env.items() if k != "FLOWER_BASIC_AUTH"}
    done = subprocess.run(
        [str(BIN), "flower", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "FLOWER_BASIC_AUTH is not set" in done.stderr


def test_flower_needs_credentials_and_lists_the_worker(stack, tmp_path):
    port = free_port()
    env = {**stack.env, "FLOWER_BASIC_AUTH": "ops:flower-test-password"}
    flower = start("flower", ["flower", "--port", str(port)], env, tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/healthcheck", flower)
        assert httpx.get(f"{url}/").status_code == 401
        assert httpx.get(f"{url}/", auth=("ops", "wrong")).status_code == 401
        auth = ("ops", "flower-test-password")
        assert httpx.get(f"{url}/", auth=auth).status_code == 200

        deadline = time.monotonic() + 30
        workers: dict = {}
        while not workers:
            assert time.monotonic() < deadline, f"Flower saw no worker:\n{flower.log()}"
            response = httpx.get(
                f"{url}/api/workers", params={"refresh": "1"}, auth=auth, timeout=20
            )
            workers = response.json() if response.status_code == 200 else {}
            time.sleep(0.5)
        registered = next(iter(workers.values())).get("registered", [])
        assert {"jobs.run", "jobs.sweep", "data.retention"} <= set(registered)
    finally:
        flower.stop()
