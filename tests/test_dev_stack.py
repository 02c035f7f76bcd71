"""`tabpfn-api dev` for real: embedded PostgreSQL and Redis, the emulator, the
API, a worker and beat; examples/quickstart.py against them; and after Ctrl-C,
nothing left running."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stack import BIN, base_env, free_port

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


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


def test_dev_stack_serves_the_quickstart_and_stops_cleanly(state_dir: Path) -> None:
    import psutil

    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    # No DATABASE_URL, REDIS_URL, SECRET_KEY or TABPFN_API_URL (base_env drops
    # TABPFN_*): everything embedded or emulated. Running in the state
    # directory keeps a project .env out of it.
    env = base_env(TABPFN_API_DEV_DIR=str(state_dir), HOME=str(state_dir))
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
        env.pop(name, None)
    output = state_dir / "dev-output.txt"
    started = time.monotonic()
    with output.open("wb") as out:
        dev = subprocess.Popen(
            [str(BIN), "dev", "--port", str(port), "--workers", "1"],
            env=env, cwd=state_dir, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    descendants: list[psutil.Process] = []
    try:
        _wait_ready(f"{api_url}/readyz", dev, output)
        ready_s = time.monotonic() - started
        descendants = psutil.Process(dev.pid).children(recursive=True)
        commands = " ".join(" ".join(p.cmdline()) for p in _still_running(descendants))
        for part in ("postgres", "redis-server", " api ", " worker ", " beat", " emulator "):
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
        for line in (f"API       {api_url}", f"{api_url}/docs", "demo-token", "Ctrl-C"):
            assert line in text, text
        assert (state_dir / "secret_key").read_text().strip() not in text

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
