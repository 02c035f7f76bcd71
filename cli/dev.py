"""`tabpfn-api dev`: the whole service on one machine, through production's code paths.

What is not configured is provided: a private PostgreSQL and Redis
(`cli.embedded`), a SECRET_KEY kept between runs, and the TabPFN emulator as
the upstream. The API, a worker, beat, Flower and the emulator then run as the
very `tabpfn-api` subcommands a deployment runs, each writing its own log file,
and Ctrl-C (or SIGTERM) stops all of them.

Failing fast is the point of most of this file: a port in use, a second stack
in the same directory, or any child exiting early ends the stack within
seconds with one line naming the cause and the end of that child's log. The
children die with this process even when it is killed hard, and whatever a
crashed earlier run left in the state directory is stopped on the next start.

State (database files, the secret key, logs, pid files) lives in `.dev/` in
the current directory, or in $TABPFN_API_DEV_DIR.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError

from cli.embedded import start_embedded_postgres, start_embedded_redis
from cli.lifeline import die_with_parent, read_pid, stop_leftover
from cli.ports import check_port
from shared.core.config import Settings, invalid_settings_line

# The console script beside this interpreter: children are the commands a
# deployment runs, and show up as such in `ps`.
BIN = Path(sys.executable).parent / "tabpfn-api"
QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
DEMO_TOKEN = "demo-token"
FLOWER_USER = "admin"
DATABASE_NAME = "tabpfn_api"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
MIGRATE_TIMEOUT_S = 120.0
LOG_TAIL_CHARS = 3000


class DevStackError(RuntimeError):
    """Something failed; the message says what, with the log that tells why."""


@dataclass
class Child:
    """A process we started and watch: a `tabpfn-api` command or an embedded server."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def failure(self, what: str) -> DevStackError:
        return _failure(self.name, what, self.log_path)


def _failure(name: str, what: str, log_path: Path) -> DevStackError:
    tail = log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    return DevStackError(f"{name} {what}; end of {log_path}:\n{tail}")


def run_dev_stack(*, host: str, port: int, workers: int | None, flower_port: int = 0) -> None:
    state_dir = Path(os.environ.get("TABPFN_API_DEV_DIR") or ".dev").resolve()
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _stop_on_signals()
    failed = False
    # ExitStack unwinds in reverse: the commands stop before the servers they use.
    with ExitStack() as cleanup:
        try:
            # Before anything starts: each of these fails in a second, not after a minute.
            _claim(state_dir)
            _stop_leftovers(state_dir)
            check_port(host, port, "--port", command="tabpfn-api dev")
            if flower_port:
                check_port(host, flower_port, "--flower-port", command="tabpfn-api dev")
            env, summary, watched = _environment(state_dir, cleanup)
            commands: list[Child] = []
            # After _stop_all (callbacks run in reverse): nothing left to stop.
            cleanup.callback((state_dir / CHILDREN_FILE).unlink, missing_ok=True)
            cleanup.callback(_stop_all, commands)
            started = _Starter(env, logs, state_dir / CHILDREN_FILE, commands)
            emulator_url = None
            if "TABPFN_API_URL" not in env:  # no upstream given: the emulator is it
                emulator_url = _start_emulator(env, started)
                summary["Emulator"] = _emulator_summary(env)
            _migrate(env, logs, [*watched, *commands])
            api_url = f"http://{_reachable(host)}:{port}"
            started("api", ["api", "--host", host, "--port", str(port)])
            # No flags: the worker as production runs it (threads, WORKER_CONCURRENCY).
            started("worker", ["worker", *(["--concurrency", str(workers)] if workers else [])])
            # Beat keeps its schedule with our state, not in the shared temp dir.
            started("beat", ["beat", "--schedule", str(state_dir / "beat-schedule")])
            flower_url = None
            if flower_port:
                env["FLOWER_BASIC_AUTH"], summary["Flower login"] = _flower_login(state_dir)
                flower_url = f"http://{_reachable(host)}:{flower_port}"
                started("flower", ["flower", "--host", host, "--port", str(flower_port)])
            watched += commands
            _wait_for_200(f"{api_url}/readyz", watched)
            if emulator_url:
                _wait_for_200(f"{emulator_url}/", watched)
            if flower_url:
                _wait_for_200(f"{flower_url}/healthcheck", watched)
                login = summary.pop("Flower login")
                summary = {"Flower": flower_url, "Flower login": login, **summary}
            _print_banner(api_url, summary, logs)
            _watch(watched)
        except KeyboardInterrupt:
            print("\nStopping the dev stack…", flush=True)
        except (RuntimeError, ValueError) as exc:
            # DevStackError, PortInUse, cli.embedded's start failures, invalid
            # settings: messages for the user.
            message = invalid_settings_line(exc) if isinstance(exc, ValidationError) else exc
            print(f"tabpfn-api dev: {message}", file=sys.stderr, flush=True)
            failed = True
        finally:
            # Shutdown is bounded by timeouts; a second Ctrl-C must not cut it
            # short and leave servers behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if failed:
        raise SystemExit(1)
    print("Stopped.", flush=True)


# In the state directory: the running stack's pid (locked while it runs), and
# the pids of its commands, for the next start to stop if this one crashed.
LOCK_FILE = "dev.pid"
CHILDREN_FILE = "dev-children.pids"
# Descriptors whose flock must live as long as this process.
_held_locks: list[int] = []


def _claim(state_dir: Path) -> None:
    """Hold the state directory's lock for this process's lifetime, or say who does."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = read_pid(state_dir / LOCK_FILE)
        raise DevStackError(
            f"a dev stack is already running here (pid {pid}, state in {state_dir}); "
            f"stop it with Ctrl-C in its terminal (or `kill {pid}`), or run this one "
            "with another TABPFN_API_DEV_DIR."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    # The kernel releases the lock when this process ends, however it ends;
    # the descriptor stays open until then on purpose (children do not inherit it).
    _held_locks.append(fd)


def _stop_leftovers(state_dir: Path) -> None:
    """Stop the commands of an earlier stack here that died without stopping them."""
    path = state_dir / CHILDREN_FILE
    for line in path.read_text().splitlines() if path.exists() else []:
        pid, _, name = line.partition(" ")
        if pid.isdigit() and stop_leftover(int(pid), must_mention=str(BIN)):
            print(f"Stopped {name} (pid {pid}) left running by an earlier dev stack.", flush=True)
            # Its own children (Celery's pool) share its process group.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
    path.unlink(missing_ok=True)


def _stop_on_signals() -> None:
    # SIGTERM ends the stack the way Ctrl-C does. SIGINT is set explicitly
    # because a shell script's background job inherits it as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _environment(state_dir: Path, cleanup: ExitStack) -> tuple[dict, dict, list[Child]]:
    """The children's environment, what to tell the user, and the servers started."""
    settings = Settings()  # the environment, then .env: what every command reads
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # logs as they happen
    summary: dict[str, str] = {}
    watched: list[Child] = []

    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
        summary["Database"] = "PostgreSQL from DATABASE_URL"
    else:
        print("Starting embedded PostgreSQL…", flush=True)
        postgres = cleanup.enter_context(start_embedded_postgres(state_dir / "postgres"))
        watched.append(Child("postgres", postgres.process, postgres.log_path))
        env["DATABASE_URL"] = _ensure_database(postgres.url, DATABASE_NAME)
        summary["Database"] = f"embedded PostgreSQL in {postgres.data_dir}/"

    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
        summary["Redis"] = "Redis from REDIS_URL"
    else:
        print("Starting embedded Redis…", flush=True)
        redis = cleanup.enter_context(start_embedded_redis(state_dir / "redis"))
        watched.append(Child("redis", redis.process, redis.log_path))
        env["REDIS_URL"] = redis.celery_url
        summary["Redis"] = f"embedded Redis in {redis.data_dir}/"

    env["SECRET_KEY"] = settings.secret_key or _kept_secret_key(state_dir / "secret_key")

    # Settings defaults to the cloud; only an upstream the user named counts.
    if "tabpfn_api_url" in settings.model_fields_set and settings.tabpfn_api_url:
        env["TABPFN_API_URL"] = settings.tabpfn_api_url
        summary["Emulator"] = f"not started; upstream is {settings.tabpfn_api_url}"
    else:
        env.pop("TABPFN_API_URL", None)  # an empty one: run_dev_stack starts the emulator
    return env, summary, watched


def _ensure_database(admin_url: str, name: str) -> str:
    """Create database `name` unless it exists; returns its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    # CREATE DATABASE cannot run inside a transaction.
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _kept_secret_key(path: Path) -> str:
    # Stored tokens are encrypted with this key: it must survive restarts.
    return _kept_secret(path, lambda: secrets.token_urlsafe(32))


def _kept_secret(path: Path, new: Callable[[], str]) -> str:
    if not path.exists():
        # Created 0600 from the start, so the secret is never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(new())
    value = path.read_text().strip()
    if not value:
        raise DevStackError(f"{path} is empty: delete it to generate a new one")
    return value


def _start_emulator(env: dict, start: _Starter) -> str:
    port = _free_port()
    env.setdefault("EMULATOR_TOKENS", DEMO_TOKEN)
    env["TABPFN_API_URL"] = f"http://127.0.0.1:{port}"
    start("emulator", ["emulator", "--port", str(port)])
    return env["TABPFN_API_URL"]


def _flower_login(state_dir: Path) -> tuple[str, str]:
    """FLOWER_BASIC_AUTH for the dev Flower, and how the banner shows it."""
    configured = Settings().flower_basic_auth
    if configured:
        # The user's own password is not printed, like their tokens.
        return configured, f"{configured.split(':', 1)[0]} / (password from FLOWER_BASIC_AUTH)"
    password = _kept_secret(state_dir / "flower_password", lambda: secrets.token_urlsafe(12))
    return f"{FLOWER_USER}:{password}", f"{FLOWER_USER} / {password}"


def _emulator_summary(env: dict) -> str:
    # The demo token is public; tokens the user chose are not printed.
    if env["EMULATOR_TOKENS"] == DEMO_TOKEN:
        return f"{env['TABPFN_API_URL']}  (TabPFN token: {DEMO_TOKEN})"
    return f"{env['TABPFN_API_URL']}  (tokens from EMULATOR_TOKENS)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(name: str, args: list[str], env: dict, logs: Path) -> Child:
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [str(BIN), *args], env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
            # Own session and process group: Ctrl-C reaches only us, we stop
            # the children in order, and a group kill also takes their children.
            # SIGTERM (their graceful stop) if we die without stopping them.
            start_new_session=True, preexec_fn=die_with_parent(),
        )  # fmt: skip
    return Child(name, popen, log_path)


class _Starter:
    """Starts commands and records their pids for the next start (see _stop_leftovers)."""

    def __init__(self, env: dict, logs: Path, pid_file: Path, commands: list[Child]) -> None:
        self.env, self.logs, self.pid_file, self.commands = env, logs, pid_file, commands

    def __call__(self, name: str, args: list[str]) -> Child:
        child = _start(name, args, self.env, self.logs)
        self.commands.append(child)
        self.pid_file.write_text("".join(f"{c.popen.pid} {c.name}\n" for c in self.commands))
        return child


def _migrate(env: dict, logs: Path, watched: list[Child]) -> None:
    """Upgrade the schema while watching what already runs: a child that dies
    meanwhile (the emulator, say) ends the stack now, not after the migration."""
    log_path = logs / "migrate.log"
    with log_path.open("wb") as log:
        migrate = subprocess.Popen(
            [str(BIN), "migrate"], env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent(),
        )  # fmt: skip
    deadline = time.monotonic() + MIGRATE_TIMEOUT_S
    try:
        while migrate.poll() is None:
            _check_alive(watched)
            if time.monotonic() > deadline:
                raise _failure("migrate", f"did not finish in {MIGRATE_TIMEOUT_S:.0f}s", log_path)
            time.sleep(0.2)
    finally:
        if migrate.poll() is None:
            migrate.kill()
            migrate.wait()
    if migrate.returncode != 0:
        raise _failure("migrate", f"failed (exit {migrate.returncode})", log_path)


def _reachable(host: str) -> str:
    # A wildcard address is where the API listens, not an address to call.
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _wait_for_200(url: str, watched: list[Child]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    answer = "no answer"
    while time.monotonic() < deadline:
        _check_alive(watched)
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            answer = f"HTTP {response.status_code}: {response.text[:300]}"
        except httpx.TransportError as exc:
            answer = type(exc).__name__
        time.sleep(0.2)
    raise DevStackError(f"{url} not ready after {READY_TIMEOUT_S:.0f}s (last: {answer})")


def _check_alive(watched: list[Child]) -> None:
    for child in watched:
        code = child.popen.poll()
        if code is not None:
            how = f"exit {code}" if code >= 0 else f"killed by signal {-code}"
            raise child.failure(f"exited unexpectedly ({how})")


def _watch(watched: list[Child]) -> None:
    """Return only by exception: Ctrl-C/SIGTERM, or a process that died."""
    while True:
        _check_alive(watched)
        time.sleep(0.5)


def _stop_all(commands: list[Child]) -> None:
    # SIGTERM to all first so they shut down in parallel (Celery's warm
    # shutdown, uvicorn's graceful one), then wait for each.
    for child in commands:
        if child.popen.poll() is None:
            child.popen.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in commands:
        try:
            child.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{child.name} did not stop in time; killing it.", file=sys.stderr, flush=True)
        # The leader may be gone while its group is not (a Celery pool process
        # whose parent was killed): the group goes with it.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child.popen.pid, signal.SIGKILL)
        child.popen.wait()


def _print_banner(api_url: str, summary: dict[str, str], logs: Path) -> None:
    rows = {
        "API": api_url,
        "Docs": f"{api_url}/docs",
        **summary,
        "Logs": f"{logs}/  " + ", ".join(sorted(p.name for p in logs.glob("*.log"))),
    }
    width = max(map(len, rows))
    lines = [f"  {name:<{width}}  {value}" for name, value in rows.items()]
    print(
        "\nTabPFN API dev stack is ready.\n\n" + "\n".join(lines) + "\n\n"
        f"  Try it:  API_URL={api_url} {sys.executable} {QUICKSTART}\n"
        "  Stop:    Ctrl-C\n",
        flush=True,
    )
