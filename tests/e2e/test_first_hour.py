"""What a newcomer meets first: the README's curl walkthrough as pasted, its
complete list of error codes, clear answers to the two commonest curl
mistakes, `WWW-Authenticate` on a 401, and a `GET /` that says where to go."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.api import register
from tests.support.tokens import ISSUED_SECRETS, fresh_token

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SOURCES = [p for d in ("api", "shared", "worker") for p in (ROOT / d).rglob("*.py")]


def _section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n## ", start + len(title))
    return README[start : end if end != -1 else None]


def _string(node: ast.AST | None) -> str | None:
    is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
    return node.value if is_text else None


def _defined_codes() -> set[str]:
    """Every error code the service can answer or store, read from the source."""
    from api.errors import HTTP_CODES, OTHER_HTTP_CODE

    names = ("code", "error_code")
    found: list[str | None] = [*HTTP_CODES.values(), OTHER_HTTP_CODE]
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            # `code = "x"` in an error class; code="x" / error_code="x" in a call
            class_attribute = isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "code" for t in node.targets
            )
            if class_attribute or (isinstance(node, ast.keyword) and node.arg in names):
                found.append(_string(node.value))
            # {"code": "x"} / {"error_code": "x"}
            elif isinstance(node, ast.Dict):
                pairs = zip(node.keys, node.values, strict=True)
                found += [_string(v) for k, v in pairs if _string(k) in names]
            # _error(status, "x", detail) in api/errors.py
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_error":
                found.append(_string(node.args[1]) if len(node.args) > 1 else None)
    return {code for code in found if code}


def test_the_readme_lists_exactly_the_error_codes_the_code_defines():
    table = _section("### Error codes")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
    defined = _defined_codes()
    # The collector must see the codes of every kind of definition.
    assert {"validation_error", "idempotency_conflict", "worker_lost", "http_error"} <= defined
    assert defined - documented == set(), "codes missing from the README's list"
    assert documented - defined == set(), "codes in the README that nothing defines"


def test_malformed_json_says_where_and_what_to_do(api):
    headers = {**register(api), "content-type": "application/json"}
    body = b'{\n  "task": "classification",\n  "train": {X: [[1]]}\n}'
    response = api.post("/jobs/fit", content=body, headers=headers)
    assert (response.status_code, response.json()["code"]) == (422, "validation_error")
    detail = response.json()["detail"]
    assert "line 3, column 13" in detail, detail
    assert "single quotes" in detail, detail


def test_a_body_without_the_json_content_type_gets_the_header_hint(api):
    # What `curl -d '{...}'` without -H sends: a form content type.
    response = api.post(
        "/auth/setup",
        content=b'{"tabpfn_token": "demo-token"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert (response.status_code, response.json()["code"]) == (422, "validation_error")
    assert "content-type: application/json" in response.json()["detail"]


def test_a_401_names_the_bearer_scheme(api):
    for headers in ({}, {"Authorization": "Bearer tpa_0000000000000000_nope"}):
        response = api.get("/jobs", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


def test_the_root_points_at_the_docs(stack):
    answer = httpx.get(f"{stack.api_url}/")
    assert answer.status_code == 200
    assert answer.json()["docs"] == "/docs" and answer.json()["console"] == "/console"
    browser = httpx.get(f"{stack.api_url}/", headers={"accept": "text/html"})
    assert (browser.status_code, browser.headers["location"]) == (307, "/docs")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_nothing_from_another_site(stack, page):
    """FastAPI's pages loaded Swagger UI and ReDoc from a CDN: a script from there ran
    on this origin, where the console keeps its API key (sessionStorage)."""
    html = httpx.get(f"{stack.api_url}{page}").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert sources, html
    assert not [u for u in sources if u.startswith(("http:", "https:", "//"))], sources
    for source in re.findall(r'src="([^"]+)"', html):
        assert httpx.get(f"{stack.api_url}{source}").status_code == 200, source


def test_the_readme_walkthrough_runs_as_pasted(stack, tmp_path):
    # Every shell block of the walkthrough and the file section, in order, as a
    # user pastes them, in a fresh directory that has the repository's examples/.
    blocks = [
        block
        for title in ("## Walkthrough with curl", "## Files in, tables out")
        for block in re.findall(r"```sh\n(.*?)```", _section(title), re.S)
    ]
    assert len(blocks) >= 5
    script = "\n".join(blocks).replace("http://127.0.0.1:8000", stack.api_url)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    ISSUED_SECRETS.extend(re.findall(r"(tpa_\w+|whsec_[\w+/=]+)", done.stdout))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = done.stdout
    assert '"status":"succeeded"' in out.replace(" ", ""), out
    assert "event: job" in out and '"predictions"' in out, out
    assert (
        (tmp_path / "predictions.csv")
        .read_text()
        .startswith("prediction,proba_setosa,proba_versicolor,proba_virginica")
    )
    assert (tmp_path / "quantiles.parquet").read_bytes()[:4] == b"PAR1"


def _fake_python(path: Path, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(0o755)
    return path


def _check_python(python: Path | str, venv: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_python.sh")],
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(python), "VENV": str(venv)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_make_refuses_an_old_python_in_one_line(tmp_path):
    done = _check_python(_fake_python(tmp_path / "python3.10", "3.10"), tmp_path / "venv")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"make: {tmp_path / 'python3.10'} is Python 3.10; this project needs 3.11 or newer: "
        "make ... PYTHON=python3.11 (or newer)"
    ]
    assert not (tmp_path / "venv").exists()


def test_make_rebuilds_a_venv_an_old_python_left(tmp_path):
    # What `make demo PYTHON=python3.10` left before this check existed.
    venv = tmp_path / "venv"
    _fake_python(venv / "bin" / "python", "3.10")
    done = _check_python(sys.executable, venv)
    assert done.returncode == 0, done.stderr
    assert "rebuilding" in done.stderr and "Python 3.10" in done.stderr
    rebuilt = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rebuilt.stdout.strip() == "True"
    assert (venv / ".made-by").read_text().strip()


def test_make_sdk_builds_the_wheel_the_readme_names(tmp_path):
    done = subprocess.run(
        ["make", "--no-print-directory", "sdk", f"SDK_DIST={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [wheel] = tmp_path.glob("tabpfn_api_client-*-py3-none-any.whl")
    assert "make sdk" in README and "./clients/python[sklearn]" in README
    # The build leaves nothing in the work tree.
    assert not (ROOT / "clients" / "python" / "build").exists()
    assert not list((ROOT / "clients" / "python").glob("*.egg-info"))
    assert wheel.stat().st_size > 10_000


def test_the_api_is_warm_before_it_reports_ready(stack, tmp_path):
    # A new API process: /healthz answers only after the warm-up ran, so its
    # first setup costs about what the next one does (it used to be seconds more:
    # importing tabpfn-client, bcrypt's self-test, the first connections).
    with stack.extra_api("api-cold", tmp_path) as (url, process):
        assert "warm-up done" in process.log()
        # What the warm-up built is out of the collector's walks (api/warm_up.py).
        frozen = re.search(r"(\d+) objects left out of garbage collection", process.log())
        assert frozen and int(frozen[1]) > 100_000, process.log()[-2000:]
        timings = []
        for _ in range(2):
            started = time.monotonic()
            response = httpx.post(
                f"{url}/auth/setup", json={"tabpfn_token": fresh_token()}, timeout=60
            )
            timings.append(time.monotonic() - started)
            assert response.status_code == 201, response.text
            ISSUED_SECRETS.append(response.json()["api_key"])
    first, second = timings
    print(f"first setup {first:.2f}s, second {second:.2f}s")
    assert first < 3 * second + 1.0, timings
