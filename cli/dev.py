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
import ipaddress
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from pydantic import ValidationError

from cli.embedded import start_embedded_postgres, start_embedded_redis
from cli.lifeline import read_pid
from cli.ports import check_port, preferred_port
from cli.supervisor import (
    Child,
    check_alive,
    start,
    stop_all,
    stop_leftovers,
    wait_for_http,
    write_pid_file,
)
from shared.core.config import Settings, invalid_settings_line

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
DEMO_TOKEN = "demo-token"
FLOWER_USER = "admin"
DATABASE_NAME = "tabpfn_api"
MIGRATE_TIMEOUT_S = 120.0


class DevStackError(RuntimeError):
    """Something failed; the message says what, with the log that tells why."""


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
            env, summary, watched = _environment(state_dir, cleanup, host=host)
            commands: list[Child] = []
            # After stop_all (callbacks run in reverse): nothing left to stop.
            cleanup.callback((state_dir / CHILDREN_FILE).unlink, missing_ok=True)
            cleanup.callback(stop_all, commands)
            started = _Starter(env, logs, state_dir / CHILDREN_FILE, commands)
            emulator_url = None
            if "TABPFN_API_URL" not in env:  # no upstream given: the emulator is it
                emulator_url = _start_emulator(env, started)
                summary["Emulator"] = _emulator_summary(env)
            _migrate(env, logs, [*watched, *commands])
            api_url = f"http://{_reachable(host)}:{port}"
            if "public_url" not in Settings().model_fields_set:
                env["PUBLIC_URL"] = api_url  # the links in job pages and webhooks
            started("api", ["api", "--host", host, "--port", str(port)])
            # No flags: the worker as production runs it (threads, WORKER_CONCURRENCY).
            started("worker", ["worker", *(["--concurrency", str(workers)] if workers else [])])
            # Beat keeps its schedule with our state, across restarts of the stack.
            started("beat", ["beat", "--schedule", str(state_dir / "beat-schedule")])
            flower_url = None
            if flower_port:
                env["FLOWER_BASIC_AUTH"], summary["Flower login"] = _flower_login(state_dir)
                flower_url = f"http://{_reachable(host)}:{flower_port}"
                started("flower", ["flower", "--host", host, "--port", str(flower_port)])
            watched += commands
            wait_for_http(f"{api_url}/readyz", *watched)
            if emulator_url:
                wait_for_http(f"{emulator_url}/", *watched)
            if flower_url:
                wait_for_http(f"{flower_url}/healthcheck", *watched)
                login = summary.pop("Flower login")
                summary = {"Flower": flower_url, "Flower login": login, **summary}
            _print_banner(api_url, summary, logs)
            _watch(watched)
        except KeyboardInterrupt:
            print("\nStopping the dev stack…", flush=True)
        except (RuntimeError, ValueError) as exc:
            # DevStackError, ChildFailed, PortInUse, cli.embedded's start
            # failures, invalid settings: messages for the user.
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
    for name, pid in stop_leftovers(state_dir / CHILDREN_FILE):
        print(f"Stopped {name} (pid {pid}) left running by an earlier dev stack.", flush=True)


def _stop_on_signals() -> None:
    # SIGTERM ends the stack the way Ctrl-C does. SIGINT is set explicitly
    # because a shell script's background job inherits it as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _environment(
    state_dir: Path, cleanup: ExitStack, *, host: str
) -> tuple[dict, dict, list[Child]]:
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
    # A local stack's webhooks go to local receivers (examples/webhook_receiver.py),
    # which production refuses as private addresses; a setting of the user's wins.
    # Not on a stack others can reach (--host 0.0.0.0): with the emulator's public
    # demo token, anyone could register and have the worker post into this network.
    if "webhook_allow_private_targets" not in settings.model_fields_set:
        if _loopback(host):
            env["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = "true"
            summary["Webhooks"] = "to any address, local ones too (WEBHOOK_ALLOW_PRIVATE_TARGETS)"
        else:
            env["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = "false"
            summary["Webhooks"] = (
                f"public addresses only: the stack listens on {host}, where others reach it "
                "(WEBHOOK_ALLOW_PRIVATE_TARGETS=true allows local receivers)"
            )

    # Settings defaults to the cloud; only an upstream the user named counts.
    if "tabpfn_api_url" in settings.model_fields_set and settings.tabpfn_api_url:
        env["TABPFN_API_URL"] = settings.tabpfn_api_url
        summary["Emulator"] = f"not started; upstream is {settings.tabpfn_api_url}"
    else:
        env.pop("TABPFN_API_URL", None)  # an empty one: run_dev_stack starts the emulator
    return env, summary, watched


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


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


# Where the docs and examples (examples/paced_burst.py's EMULATOR_URL) look for it.
EMULATOR_PORT = 8080


def _start_emulator(env: dict, started: _Starter) -> str:
    port = preferred_port(EMULATOR_PORT)
    env.setdefault("EMULATOR_TOKENS", DEMO_TOKEN)
    env["TABPFN_API_URL"] = f"http://127.0.0.1:{port}"
    started("emulator", ["emulator", "--port", str(port)])
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


class _Starter:
    """Starts commands and records their pids for the next start (see _stop_leftovers)."""

    def __init__(self, env: dict, logs: Path, pid_file: Path, commands: list[Child]) -> None:
        self.env, self.logs, self.pid_file, self.commands = env, logs, pid_file, commands

    def __call__(self, name: str, args: list[str]) -> Child:
        child = start(name, args, self.env, self.logs)
        self.commands.append(child)
        write_pid_file(self.pid_file, self.commands)
        return child


def _migrate(env: dict, logs: Path, watched: list[Child]) -> None:
    """Upgrade the schema while watching what already runs: a child that dies
    meanwhile (the emulator, say) ends the stack now, not after the migration."""
    migrate = start("migrate", ["migrate"], env, logs)
    deadline = time.monotonic() + MIGRATE_TIMEOUT_S
    try:
        while migrate.alive():
            check_alive(*watched)
            if time.monotonic() > deadline:
                raise migrate.failure(f"did not finish in {MIGRATE_TIMEOUT_S:.0f}s")
            time.sleep(0.2)
    finally:
        if migrate.alive():
            migrate.popen.kill()
            migrate.popen.wait()
    if migrate.popen.returncode != 0:
        raise migrate.failure(f"failed (exit {migrate.popen.returncode})")


def _reachable(host: str) -> str:
    # A wildcard address is where the API listens, not an address to call.
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _watch(watched: list[Child]) -> None:
    """Return only by exception: Ctrl-C/SIGTERM, or a process that died."""
    while True:
        check_alive(*watched)
        time.sleep(0.5)


def _print_banner(api_url: str, summary: dict[str, str], logs: Path) -> None:
    rows = {
        "API": api_url,
        "Console": f"{api_url}/console/",
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
