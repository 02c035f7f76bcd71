"""Real processes for end-to-end tests: the emulator, the API and Celery workers.

Each is started with the `tabpfn-api` command a user would run, on a free
port, with its output kept in a log file that a failing test can print.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from cli.lifeline import die_with_parent

BIN = Path(sys.executable).parent / "tabpfn-api"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Process:
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("w")
    popen = subprocess.Popen(
        [str(BIN), *args],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # A test run killed hard (SIGKILL, a CI time-out) must not leave servers behind.
        preexec_fn=die_with_parent(),
    )
    return Process(name=name, popen=popen, log_path=log_path)


def wait_http(url: str, process: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited early:\n{process.log()}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not answer {url} in {timeout}s:\n{process.log()}")


@dataclass
class Stack:
    api_url: str
    emulator_url: str
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(f"----- {p.name} -----\n{p.log()[-6000:]}" for p in self.processes)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def sql(self, query: str, **params) -> list:
        """Run one statement in the stack's database (committed) and return its rows."""
        engine = create_engine(self.env["DATABASE_URL"])
        with engine.begin() as connection:
            rows = connection.execute(text(query), params).all()
        engine.dispose()
        return rows

    @contextmanager
    def extra_api(self, name: str, log_dir: Path, **settings: str) -> Iterator[tuple[str, Process]]:
        """Another API process beside the main one (same database and Redis) with
        some settings changed; yields its `/api/v1` base URL and the process."""
        port = free_port()
        process = start(name, ["api", "--port", str(port)], {**self.env, **settings}, log_dir)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", process, timeout=90)
            yield f"http://127.0.0.1:{port}/api/v1", process
        finally:
            process.stop()


def base_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TABPFN_", "EMULATOR_"))}
    env.update(values)
    return env
