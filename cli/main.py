"""`tabpfn-api`: one command for every process of the service."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from shared.config import MissingSettingError, get_settings
from shared.logging_setup import configure_logging

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
    get_settings().require("DATABASE_URL")
    from alembic import command

    command.upgrade(_alembic_config(), "head")


def run_api(args: argparse.Namespace) -> None:
    import uvicorn

    get_settings().require("DATABASE_URL", "SECRET_KEY", "REDIS_URL")
    from api.app import create_app

    # log_config=None: uvicorn's own lines go through our handler (LOG_FORMAT).
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning", log_config=None)


def _celery_argv(extra: list[str]) -> list[str]:
    return ["--loglevel", get_settings().log_level.upper(), *extra]


def run_worker(args: argparse.Namespace) -> None:
    get_settings().require("DATABASE_URL", "SECRET_KEY", "REDIS_URL")
    from worker.tasks import app

    app.worker_main(argv=["worker", *_celery_argv(args.celery_args)])


def run_beat(args: argparse.Namespace) -> None:
    get_settings().require("DATABASE_URL", "REDIS_URL")
    from worker.tasks import app

    schedule = Path(tempfile.gettempdir()) / "tabpfn-api-beat-schedule"
    app.start(["beat", "--schedule", str(schedule), *_celery_argv(args.celery_args)])


def run_flower(args: argparse.Namespace) -> None:
    settings = get_settings().require("REDIS_URL", "FLOWER_BASIC_AUTH")
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
    from shared.secret_rotation import rotate_stored_secrets

    count = rotate_stored_secrets()
    print(f"Re-encrypted the secrets of {count} user(s) with the first key of SECRET_KEY.")


def run_emulator(args: argparse.Namespace) -> None:
    from emulator.app import serve

    serve(args.host, args.port)


def run_dev(args: argparse.Namespace) -> None:
    from cli.dev import run_dev_stack

    run_dev_stack(host=args.host, port=args.port, workers=args.workers)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tabpfn-api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler, help_: str, port: int | None = None):
        sub = commands.add_parser(name, help=help_)
        sub.set_defaults(handler=handler)
        if port is not None:
            sub.add_argument("--host", default="127.0.0.1")
            sub.add_argument("--port", type=int, default=port)
        return sub

    add("api", run_api, "serve the HTTP API", port=8000)
    add("worker", run_worker, "run a Celery worker (extra arguments go to Celery)")
    add("beat", run_beat, "run the periodic scheduler (sweeper)")
    add("flower", run_flower, "run Flower behind basic auth", port=5555)
    add("migrate", run_migrate, "upgrade the database schema to head")
    add("rotate-secret", run_rotate_secret, "re-encrypt stored tokens with the first SECRET_KEY")
    add("emulator", run_emulator, "run the local TabPFN-compatible server", port=8080)
    dev = add("dev", run_dev, "run everything on this machine", port=8000)
    dev.add_argument("--workers", type=int, default=2, help="worker processes")
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
    except MissingSettingError as exc:
        print(f"tabpfn-api {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
