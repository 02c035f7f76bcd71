"""`tabpfn-api`: one command for every process of the service."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from cli.ports import PortInUse, check_port
from shared.core.config import MissingSettingError, get_settings, invalid_settings_line
from shared.core.logging_setup import configure_logging

REPO_ROOT = Path(__file__).resolve().parents[1]


def _alembic_config():
    from alembic.config import Config

    # The migrations ship beside the packages (editable install, Docker /app).
    for root in (REPO_ROOT, Path.cwd()):
        if (root / "alembic.ini").exists():
            config = Config(str(root / "alembic.ini"))
            config.set_main_option("script_location", str(root / "alembic"))
            return config
    raise SystemExit("alembic.ini not found: run from the project directory.")


def run_migrate(_: argparse.Namespace) -> None:
    settings = get_settings().require("DATABASE_URL")
    from alembic import command

    from cli.database_wait import wait_for_database

    wait_for_database(settings.database_url)

    config = _alembic_config()
    # Logging is already set up (LOG_FORMAT); alembic.ini's would replace it.
    config.attributes["configure_logger"] = False
    # Two at once (containers starting together) take turns: alembic/env.py.
    command.upgrade(config, "head")


def run_api(args: argparse.Namespace) -> None:
    import uvicorn

    get_settings().require("DATABASE_URL", "SECRET_KEY", "REDIS_URL")
    # uvicorn would import and warm the app before finding the port taken.
    check_port(args.host, args.port, "--port", command="tabpfn-api api")

    # log_config=None: uvicorn's own lines go through our handler (LOG_FORMAT).
    served = {
        "host": args.host,
        "port": args.port,
        "log_level": "warning",
        "log_config": None,
        "timeout_keep_alive": get_settings().api_keepalive_s,
        # Read from .env too (uvicorn would read the environment alone).
        "forwarded_allow_ips": get_settings().forwarded_allow_ips,
        # Event streams and long-polls would otherwise hold a SIGTERMed process open.
        "timeout_graceful_shutdown": get_settings().api_drain_s,
    }
    processes = get_settings().api_processes
    if processes > 1:
        # Each process builds its own app (its own pools, key cache, job-change
        # subscription) from the factory, which also sets up its logging.
        uvicorn.run("api.app:create_served_app", factory=True, workers=processes, **served)
        return
    from api.app import create_app  # here: uvicorn's supervisor above needs no app

    uvicorn.run(create_app(), **served)


def _celery_argv(extra: list[str]) -> list[str]:
    return ["--loglevel", get_settings().log_level.upper(), *extra]


def run_worker(args: argparse.Namespace) -> None:
    get_settings().require("DATABASE_URL", "SECRET_KEY", "REDIS_URL")
    from worker.node import run_node

    run_node(_celery_argv(args.celery_args))


@contextmanager
def _beat_schedule(configured: str | None) -> Iterator[Path]:
    """BEAT_SCHEDULE_FILE, else a file in a private temp directory removed afterwards.

    Not one fixed name in the shared temp dir: every beat on the host used it,
    each writing over the others' run times (Python's fallback dbm has no lock).
    """
    if configured:
        yield Path(configured)
        return
    with tempfile.TemporaryDirectory(prefix="tabpfn-api-beat-") as private:
        yield Path(private) / "schedule"


def run_beat(args: argparse.Namespace) -> None:
    settings = get_settings().require("DATABASE_URL", "REDIS_URL")
    from worker.tasks import app

    # Celery's SIGTERM handler exits through SystemExit: the directory goes too.
    with _beat_schedule(settings.beat_schedule_file) as schedule:
        app.start(["beat", "--schedule", str(schedule), *_celery_argv(args.celery_args)])


def run_flower(args: argparse.Namespace) -> None:
    try:
        settings = get_settings().require("REDIS_URL", "FLOWER_BASIC_AUTH")
    except MissingSettingError as exc:
        # The dev stack's Redis is a private socket: its Flower is the way in.
        raise MissingSettingError(
            f"{exc} For the dev stack, `tabpfn-api dev` runs Flower itself "
            "and prints its URL and login."
        ) from None
    check_port(args.host, args.port, "--port", command="tabpfn-api flower")
    from worker.tasks import app

    app.start(
        [
            "flower",
            f"--basic-auth={settings.flower_basic_auth}",
            f"--address={args.host}",
            f"--port={args.port}",
        ]
    )


def run_rotate_secret(_: argparse.Namespace) -> None:
    get_settings().require("DATABASE_URL", "SECRET_KEY")
    from shared.accounts.secret_rotation import rotate_stored_secrets

    count, unreadable = rotate_stored_secrets()
    print(f"Re-encrypted the secrets of {count} user(s) with the first key of SECRET_KEY.")
    if unreadable:
        # The ids only: they are no secret, and tell the operator whom to look at.
        listed = "\n".join(f"  {user_id}" for user_id in unreadable)
        sys.exit(
            f"tabpfn-api rotate-secret: {len(unreadable)} user(s) hold a secret no key in "
            f"SECRET_KEY decrypts; they were left as they are:\n{listed}\nAdd the key they "
            "were stored with to "
            "SECRET_KEY and run rotate-secret again before you drop any key (docs/security.md)."
        )


def run_emulator(args: argparse.Namespace) -> None:
    from emulator.app import serve

    serve(args.host, args.port)


def run_dev(args: argparse.Namespace) -> None:
    from cli.dev import run_dev_stack

    run_dev_stack(
        host=args.host,
        port=args.port,
        workers=args.workers,
        flower_port=args.flower_port,
    )


EXAMPLES = {
    "api": """examples:
  tabpfn-api api                              # http://127.0.0.1:8000
  tabpfn-api api --host 0.0.0.0 --port 8080   # every interface, another port""",
    "worker": """examples:
  tabpfn-api worker                           # 64 job slots (WORKER_CONCURRENCY) on threads
  tabpfn-api worker --concurrency 16          # 16 slots
  WORKER_PROCESSES=1 tabpfn-api worker        # all slots on one process (less memory)""",
    "flower": """examples:
  FLOWER_BASIC_AUTH=ops:long-password tabpfn-api flower --port 5555
  (`tabpfn-api dev` starts its own Flower and prints its URL and login)""",
    "emulator": """examples:
  tabpfn-api emulator --port 8080
  EMULATOR_TOKENS=demo-token,other-token tabpfn-api emulator""",
    "dev": """examples:
  tabpfn-api dev                              # API on http://127.0.0.1:8000
  tabpfn-api dev --port 8012                  # when 8000 is taken
  tabpfn-api dev --host 0.0.0.0 --workers 8   # reachable from other machines

Starts, unless configured: a private PostgreSQL and Redis (state in .dev/ or
$TABPFN_API_DEV_DIR), the TabPFN emulator (token demo-token), then the API, a
worker, beat and Flower. Ctrl-C stops everything.""",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tabpfn-api",
        description=__doc__,
        epilog="Run `tabpfn-api COMMAND --help` for a command's options and examples.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler, help_: str, port: int | None = None):
        sub = commands.add_parser(
            name,
            help=help_,
            description=help_[0].upper() + help_[1:] + ".",
            epilog=EXAMPLES.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        if port is not None:
            sub.add_argument(
                "--host",
                default="127.0.0.1",
                help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)",
            )
            sub.add_argument(
                "--port", type=int, default=port, help="port to listen on (default: %(default)s)"
            )
        return sub

    add("api", run_api, "serve the HTTP API", port=8000)
    add("worker", run_worker, "run a worker node (extra arguments go to Celery)")
    add("beat", run_beat, "run the periodic scheduler (sweeper)")
    add("flower", run_flower, "run Flower behind basic auth", port=5555)
    add("migrate", run_migrate, "upgrade the database schema to head")
    add(
        "rotate-secret",
        run_rotate_secret,
        "re-encrypt stored tokens with the first SECRET_KEY and recompute token fingerprints",
    )
    add("emulator", run_emulator, "run the local TabPFN-compatible server", port=8080)
    dev = add("dev", run_dev, "run everything on this machine", port=8000)
    dev.add_argument(
        "--workers",
        type=int,
        default=None,
        help="jobs the worker holds in flight (default: WORKER_CONCURRENCY, 64)",
    )
    dev.add_argument(
        "--flower-port",
        type=int,
        default=5555,
        help="port of Flower, the operators' dashboard; 0 to not start it (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    # Celery's own options pass through untouched.
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in ("worker", "beat"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.celery_args = rest
    try:
        configure_logging()
        args.handler(args)
    except (MissingSettingError, PortInUse) as exc:
        print(f"tabpfn-api {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        print(f"tabpfn-api {args.command}: {invalid_settings_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
