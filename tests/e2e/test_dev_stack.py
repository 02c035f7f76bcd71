"""`tabpfn-api dev` for real: embedded PostgreSQL and Redis, the emulator, the
API, a worker, beat and Flower; examples/quickstart.py against them; and after
Ctrl-C, nothing left running. Also the first-hour failures: a port in use, a
second stack in the same directory, and a stack killed hard (SIGKILL)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.ports import free_port
from cli.supervisor import BIN
from cli.throwaway import base_env
from tests.support.webhook_receiver import start_receiver

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
_TRAIN = {"X": [[1.0], [2.0], [3.0], [4.0]], "y": ["a", "a", "b", "b"]}


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Short on purpose: the PostgreSQL socket path inside must stay under
    # 104 bytes, which pytest's tmp_path does not promise.
    with tempfile.TemporaryDirectory(prefix="tabpfn-dev-") as path:
        yield Path(path)


def _wait_ready(url: str, dev: subprocess.Popen, output: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert dev.poll() is None, f"dev stack exited early:\n{output.read_text()}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} not ready in {READY_TIMEOUT_S}s:\n{output.read_text()}")


def _still_running(processes: list) -> list:
    import psutil

    def alive(process: psutil.Process) -> bool:
        # is_running() also checks the start time, so a reused pid does not count;
        # a zombie has exited and only waits for its new parent to reap it.
        try:
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return [p for p in processes if alive(p)]


def _mentioning(text: str) -> list:
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        if text in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return _still_running(found)


def _dev_env(state_dir: Path) -> dict[str, str]:
    # No DATABASE_URL, REDIS_URL, SECRET_KEY, FLOWER_BASIC_AUTH or TABPFN_API_URL
    # (base_env drops TABPFN_*): everything embedded or emulated.
    env = base_env(TABPFN_API_DEV_DIR=str(state_dir), HOME=str(state_dir))
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FLOWER_BASIC_AUTH"):
        env.pop(name, None)
    return env


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_dev(state_dir: Path, output: Path, *args: str) -> subprocess.Popen:
    # Running in the state directory keeps a project .env out of it.
    with output.open("wb") as out:
        return subprocess.Popen(
            [str(BIN), "dev", "--workers", "1", *args],
            env=_dev_env(state_dir), cwd=state_dir, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def _run_dev(
    state_dir: Path, *args: str, timeout: float = 30, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN), "dev", "--workers", "1", *args], env={**_dev_env(state_dir), **env},
        cwd=state_dir, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_dev_help_describes_every_option_with_examples() -> None:
    done = subprocess.run([str(BIN), "dev", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for option, text in [
        ("--host", "address to listen on"),
        ("--port", "port to listen on"),
        ("--workers", "jobs the worker holds in flight"),
        ("--flower-port", "port of Flower"),
    ]:
        assert option in done.stdout and text in " ".join(done.stdout.split()), done.stdout
    assert "examples:" in done.stdout and "tabpfn-api dev --port 8012" in done.stdout


@pytest.mark.parametrize("option", ["--port", "--flower-port"])
def test_a_taken_port_fails_at_once_with_one_line(state_dir: Path, option: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = {"--port": str(free_port()), "--flower-port": str(free_port()), option: str(taken)}
        started = time.monotonic()
        done = _run_dev(state_dir, *(x for pair in ports.items() for x in pair))
    assert time.monotonic() - started < 10
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"port {taken} on 127.0.0.1 is already in use" in lines[0]
    assert f"`tabpfn-api dev {option} " in lines[0]
    # Nothing was started: no database files, no servers.
    assert not (state_dir / "postgres").exists()


def test_a_child_that_dies_early_ends_the_stack_with_its_log(state_dir: Path) -> None:
    # The emulator refuses this setting and exits; nothing else would notice.
    done = _run_dev(
        state_dir, "--port", str(free_port()), "--flower-port", "0", timeout=180,
        EMULATOR_LATENCY_S="not-a-number",
    )  # fmt: skip
    assert done.returncode == 1
    first, *tail = done.stderr.strip().splitlines()
    assert first.startswith("tabpfn-api dev: emulator exited unexpectedly (exit 1); end of ")
    assert "latency_s" in "\n".join(tail)  # the end of its log says why
    # Everything it had started is stopped.
    assert not _mentioning(str(state_dir))


def test_a_second_stack_is_refused_and_a_hard_kill_leaves_nothing(state_dir: Path) -> None:
    import psutil

    port = free_port()
    output = state_dir / "dev-output.txt"
    dev = _start_dev(state_dir, output, "--port", str(port), "--flower-port", "0")
    descendants: list[psutil.Process] = []
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", dev, output)
        descendants = psutil.Process(dev.pid).children(recursive=True)
        assert len(descendants) >= 5

        second = _run_dev(state_dir, "--port", str(free_port()), "--flower-port", "0")
        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"tabpfn-api dev: a dev stack is already running here (pid {dev.pid}, state in "
            f"{state_dir}); stop it with Ctrl-C in its terminal (or `kill {dev.pid}`), or run "
            "this one with another TABPFN_API_DEV_DIR."
        )

        # SIGKILL: no clean-up code runs. The children die with their parent anyway.
        dev.kill()
        dev.wait()
        deadline = time.monotonic() + 20
        while _still_running(descendants) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [" ".join(p.cmdline()) for p in _still_running(descendants)]
        assert not left, left
    finally:
        for process in _still_running(descendants):
            process.kill()


def test_a_later_start_stops_what_a_crashed_stack_left(state_dir: Path) -> None:
    # A command an earlier stack started and that survived it (no parent-death
    # signal on this system, say): its pid is in the state directory.
    logs = state_dir / "leftover.log"
    with logs.open("wb") as log:
        leftover = subprocess.Popen(
            [str(BIN), "emulator", "--port", str(free_port())], stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        (state_dir / "dev-children.pids").write_text(f"{leftover.pid} emulator\n{os.getpid()} x\n")
        with socket.socket() as holder:  # the run then stops at the port check
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            done = _run_dev(state_dir, "--port", str(holder.getsockname()[1]))
        assert f"Stopped emulator (pid {leftover.pid}) left running" in done.stdout, done
        assert leftover.wait(5) is not None
        assert not (state_dir / "dev-children.pids").exists()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_dev_stack_serves_the_quickstart_and_stops_cleanly(state_dir: Path) -> None:
    import psutil

    port, flower_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{port}"
    output = state_dir / "dev-output.txt"
    started = time.monotonic()
    emulator_port_free = _free(8080)
    dev = _start_dev(state_dir, output, "--port", str(port), "--flower-port", str(flower_port))
    descendants: list[psutil.Process] = []
    try:
        _wait_ready(f"{api_url}/readyz", dev, output)
        ready_s = time.monotonic() - started
        descendants = psutil.Process(dev.pid).children(recursive=True)
        commands = " ".join(" ".join(p.cmdline()) for p in _still_running(descendants))
        for part in (
            "postgres", "redis-server", " api ", " worker ", " beat", " emulator ", " flower "
        ):  # fmt: skip
            assert part in commands, f"{part!r} not among the dev stack's processes: {commands}"
        assert (state_dir / "secret_key").stat().st_mode & 0o777 == 0o600

        done = subprocess.run(
            [sys.executable, str(QUICKSTART)],
            env=base_env(API_URL=api_url, TABPFN_TOKEN="demo-token"),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{output.read_text()}"
        accuracy = re.search(r"Accuracy on the 30 test rows: (\d\.\d+)", done.stdout)
        assert accuracy, done.stdout
        assert float(accuracy.group(1)) >= 0.8, done.stdout  # a model, not a guess

        # The banner comes right after /readyz answers; it never shows a secret.
        text = output.read_text()
        for line in (f"API           {api_url}", f"{api_url}/docs", "demo-token", "Ctrl-C"):
            assert line in text, text
        assert f"Console       {api_url}/console/" in text, text
        # The emulator where examples/paced_burst.py looks for it, unless 8080 was taken.
        emulator_url = re.search(r"Emulator      (\S+)", text).group(1)
        if emulator_port_free:
            assert emulator_url == "http://127.0.0.1:8080", text
        assert httpx.get(f"{emulator_url}/_emulator/config").status_code == 200
        assert httpx.get(f"{api_url}/console/").status_code == 200

        # Webhooks to a receiver on this machine, as docs/clients.md shows (production
        # refuses private addresses); the event's links name this stack's port.
        receiver, server = start_receiver()
        try:
            key = httpx.post(
                f"{api_url}/api/v1/auth/setup", json={"tabpfn_token": "demo-token"}
            ).json()["api_key"]
            submitted = httpx.post(
                f"{api_url}/api/v1/jobs/fit",
                json={"task": "classification", "train": _TRAIN, "callback_url": receiver.url},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert submitted.status_code == 202, submitted.text
            event = json.loads(receiver.wait_for(1, timeout=30)[0].body)
            assert event["data"]["job_id"] == submitted.json()["id"], event
            assert event["data"]["links"]["job"].startswith(f"{api_url}/api/v1/jobs/"), event
        finally:
            server.shutdown()
        assert (state_dir / "secret_key").read_text().strip() not in text

        # Flower: its URL and generated login are in the banner, and it needs them.
        flower_url = f"http://127.0.0.1:{flower_port}"
        login = re.search(r"Flower login  (\S+) / (\S+)", text)
        assert f"Flower        {flower_url}" in text and login, text
        assert httpx.get(f"{flower_url}/").status_code == 401
        assert httpx.get(f"{flower_url}/", auth=login.groups()).status_code == 200

        stopping = time.monotonic()
        dev.send_signal(signal.SIGINT)
        assert dev.wait(STOP_TIMEOUT_S) == 0, output.read_text()
        stop_s = time.monotonic() - stopping
        assert "Stopped." in output.read_text()

        # Grandchildren (Celery's pool, PostgreSQL's backends) may trail their
        # parent by a moment.
        deadline = time.monotonic() + 5
        while _still_running(descendants) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _still_running(descendants)
        assert not _mentioning(str(state_dir))
        print(f"ready in {ready_s:.1f}s, stopped in {stop_s:.1f}s")
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
        for process in _still_running(descendants):
            process.kill()
