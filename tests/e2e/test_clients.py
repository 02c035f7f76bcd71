"""Clients against the real stack: the Python SDK and its CLI installed alone in a fresh
virtualenv, the webhook helper (cross-checked with `standardwebhooks`), the webhook
receiver example, and the Node and curl quickstarts."""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from standardwebhooks.webhooks import Webhook

from cli.ports import free_port
from tests.support.api import register, wait_for_job
from tests.support.stacks import Stack
from tests.support.tokens import ISSUED_SECRETS, fresh_token

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "clients" / "python"
EXAMPLES = ROOT / "examples"
IRIS = EXAMPLES / "data" / "iris.csv"
SERVER_PACKAGES = ("fastapi", "celery", "sqlalchemy", "tabpfn_client")


# -- the fresh virtualenv ----------------------------------------------------------


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory) -> Path:
    """A new virtualenv with only `tabpfn-api-client[sklearn]` installed (from a copy of
    clients/python, so the build leaves nothing in the work tree)."""
    base = tmp_path_factory.mktemp("sdk")
    source = base / "src"
    shutil.copytree(
        CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # --no-compile: pip would compile every module of numpy, pandas, scipy and
    # scikit-learn (half the install's time); the tests import a fraction of them.
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile"]
        + [f"{source}[sklearn]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv


def _env(venv: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TABPFN_", "API_URL", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _run(
    venv: Path, args: list[str], *, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=_env(venv, **env), cwd=venv
    )


def _python(venv: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    return _run(venv, [str(venv / "bin" / "python"), "-c", code], **env)


def _cli(venv: Path, stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess:
    return _run(
        venv, [str(venv / "bin" / "tabpfn-api-client"), *args], API_URL=stack.api_url, **env
    )


def test_sdk_installs_alone_without_server_packages(sdk_venv: Path):
    for module in SERVER_PACKAGES:
        found = _python(sdk_venv, f"import {module}")
        assert found.returncode != 0, f"{module} is importable in the client's virtualenv"
        assert "ModuleNotFoundError" in found.stderr
    ok = _python(
        sdk_venv,
        "import tabpfn_api_client as t, sklearn, httpx; "
        "print(t.__version__, t.RemoteTabPFNClassifier.__name__)",
    )
    assert ok.returncode == 0, ok.stderr
    assert "RemoteTabPFNClassifier" in ok.stdout


def test_the_package_and_its_cli_start_without_numpy_and_pandas(sdk_venv: Path):
    """Importing them takes about 0.3 s of a fresh process: only a call that sends or
    shows a table needs them (a script's first fit, the CLI's fit or predict)."""
    probe = _python(
        sdk_venv,
        "import sys, tabpfn_api_client, tabpfn_api_client.cli; "
        "print(sorted(m for m in ('numpy', 'pandas') if m in sys.modules))",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]", probe.stdout


TLS_CHECK = r"""
import ssl
from tabpfn_api_client import Client, RemoteTabPFNClassifier
from tabpfn_api_client.client import _tls_context

first = Client("https://127.0.0.1:1", "k")
clients = [Client("http://127.0.0.1:1", "k") for _ in range(3)]
clones = [RemoteTabPFNClassifier("https://127.0.0.1:1", "k")._client() for _ in range(3)]
context = _tls_context()
assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname, "TLS not verified"
for client in [first, *clients, *clones]:
    assert client._http._transport._pool._ssl_context is context, "a client built its own"
print("shared")
"""


def test_sdk_clients_share_one_verifying_tls_context(sdk_venv: Path):
    # httpx builds a TLS context per client by default, loading the CA bundle each
    # time (~20 ms): every estimator clone paid it. One per process, still verifying.
    ran = _python(sdk_venv, TLS_CHECK)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "shared"


# -- the SDK end to end ------------------------------------------------------------

SDK_SCRIPT = r"""
import json, os, uuid
import httpx
import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tabpfn_api_client import (
    AuthenticationError, Client, JobCanceledError, NotFoundError, RemoteTabPFNClassifier,
    RemoteTabPFNRegressor, TabPFNAPIError, ValidationError,
)

URL = os.environ["API_URL"]
report = {}

# Setup keeps the key; fit a DataFrame with a missing value; wait with progress updates.
client = Client(URL)
account = client.setup(os.environ["TABPFN_TOKEN"])
assert client.api_key == account["api_key"] and account["webhook_secret"].startswith("whsec_")
assert account["account"] == "new", account
frame = pd.read_csv(os.environ["IRIS"])
X, y = frame.drop(columns=["species"]), frame["species"]
X.iloc[0, 1] = np.nan
seen = []
fit = client.fit(X.iloc[::2], y.iloc[::2], options={"n_estimators": 2})
fit.wait(timeout=120, on_update=lambda job: seen.append(job.status))
assert fit.status == "succeeded" and fit.model_id, fit.data
assert seen[-1] == "succeeded", seen
fitted = fit.result()
assert fitted["classes"] == ["setosa", "versicolor", "virginica"], fitted

# Predict by column name (records-free DataFrame), then positionally (plain rows).
result = client.predict(fit.model_id, X.iloc[1::2], output="probabilities").result(timeout=120)
assert len(result["predictions"]) == 75 and len(result["probabilities"][0]) == 3
truth = y.iloc[1::2].tolist()
report["accuracy"] = sum(p == t for p, t in zip(result["predictions"], truth)) / len(truth)
rows = client.predict(fit.model_id, X.iloc[1:4].to_numpy().tolist()).result(timeout=120)
assert len(rows["predictions"]) == 3 and set(rows["predictions"]) <= set(fitted["classes"])

# Regression in one fit-predict job, with quantiles.
both = client.fit_predict(
    X.iloc[:, :3], X.iloc[:, 3], X.iloc[:5, :3], task="regression", quantiles=[0.1, 0.9]
).result(timeout=120)
assert set(both["quantiles"]) == {"0.1", "0.9"} and len(both["predictions"]) == 5, both

# A submit that waits for its job: it comes back finished, its result with it.
requests = []
client._http.event_hooks["request"].append(lambda request: requests.append(request.url.path))
waited = client.fit_predict(X.iloc[::3], y.iloc[::3], X.iloc[:4], wait=60)
assert waited.status == "succeeded" and len(requests) == 1, (waited.data, requests)
assert len(waited.result()["predictions"]) == 4 and len(requests) == 1  # no second request
assert "result" not in waited.data and waited.result() == client.get_job(waited.id).result()
client._http.event_hooks["request"].clear()

# Listing, one job, models and usage.
assert fit.id in [job.id for job in client.list_jobs(limit=50)]
assert client.get_job(fit.id).status == "succeeded"
assert fit.model_id in [m["id"] for m in client.list_models()]
models = [m["id"] for m in client.list_models()]
assert [m["id"] for m in client.iter_models()] == models  # newest first, either way
first_page = client.list_models(limit=1)
assert [m["id"] for m in first_page] == models[:1]
assert [m["id"] for m in client.list_models(limit=1, before=first_page[0]["id"])] == models[1:2]
assert "current_usage" in client.usage()

# The same Idempotency-Key and body: one job.
key = str(uuid.uuid4())
first = client.fit(X.iloc[::7], y.iloc[::7].tolist(), idempotency_key=key)
again = client.fit(X.iloc[::7], y.iloc[::7].tolist(), idempotency_key=key)
assert first.id == again.id

# A response lost after the server made the job, and a 503 with Retry-After: the
# client retries with the same Idempotency-Key, and exactly one job is made.
class Flaky(httpx.BaseTransport):
    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.faults = ["503", "lost"]
        self.keys = []

    def handle_request(self, request):
        if request.method == "POST" and request.url.path.endswith("/jobs/fit"):
            self.keys.append(request.headers["idempotency-key"])
            if self.faults:
                fault = self.faults.pop(0)
                if fault == "503":
                    return httpx.Response(503, headers={"Retry-After": "0"}, json={
                        "detail": "briefly unavailable", "code": "service_unavailable"})
                response = self.inner.handle_request(request)
                response.read()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return self.inner.handle_request(request)

flaky = Flaky()
retrying = Client(URL, account["api_key"], transport=flaky, backoff_s=0.05)
before = len(client.list_jobs(type="fit", limit=200))
retried = retrying.fit(X.iloc[::5], y.iloc[::5])
assert len(flaky.keys) == 3 and len(set(flaky.keys)) == 1, flaky.keys
assert len(client.list_jobs(type="fit", limit=200)) == before + 1
assert retried.wait(timeout=120).status == "succeeded"

# Another server at the URL (a proxy's login page): a clear error, not a JSON traceback.
class Html(httpx.BaseTransport):
    def handle_request(self, request):
        return httpx.Response(200, headers={"content-type": "text/html"}, text="<p>sign in</p>")

try:
    Client(URL, "k", transport=Html()).list_jobs()
    raise AssertionError("an HTML page is no job list")
except TabPFNAPIError as exc:
    assert exc.code == "unexpected_response" and "text/html, not JSON" in exc.detail, exc

# Cancel: a job either canceled in time (its result then raises) or already done.
job = client.fit(X, y).cancel()
assert job.status in ("canceled", "succeeded", "queued", "running"), job.data
if job.status == "canceled":
    try:
        job.result()
        raise AssertionError("a canceled job has no result")
    except JobCanceledError as exc:
        assert exc.code == "canceled"

# Typed errors carry the service's code and status.
try:
    Client(URL, "tpa_0123456789abcdef_" + "x" * 43).list_jobs()
    raise AssertionError("a bad key was accepted")
except AuthenticationError as exc:
    assert exc.code == "unauthorized" and exc.status_code == 401, exc
    report["bad_key_code"] = exc.code
try:
    client.predict(str(uuid.uuid4()), X.iloc[:2])
    raise AssertionError("an unknown model was accepted")
except NotFoundError as exc:
    assert exc.code == "model_not_found", exc
try:
    client.fit(X.iloc[::9], y.iloc[::9], options={"no_such_option": 1})
    raise AssertionError("an unknown option was accepted")
except ValidationError as exc:
    assert exc.code == "validation_error" and exc.status_code == 422, exc
try:
    client.fit([[1.0], [float("inf")]], ["a", "b"])
    raise AssertionError("an infinite value was sent")
except ValidationError as exc:
    assert exc.status_code is None  # refused before sending

# Estimators: clone-safe, inside cross_val_score, a Pipeline and GridSearchCV.
Xi, yi = load_iris(return_X_y=True)
Xi, yi = Xi[::2], yi[::2]
estimator = RemoteTabPFNClassifier(URL, account["api_key"], n_estimators=2, random_state=0)
copy = clone(estimator)
assert copy.get_params() == estimator.get_params() and copy is not estimator
# The key is a parameter, never printed: alone, inside a search, in a notebook's HTML.
assert account["api_key"] not in repr(estimator) and "api_key='***'" in repr(estimator)
assert "api_key" not in repr(RemoteTabPFNClassifier(n_estimators=2))
searched = GridSearchCV(estimator, {"n_estimators": [1, 2]})
assert account["api_key"] not in repr(searched) and "api_key='***'" in repr(searched)
assert account["api_key"] not in searched._repr_html_() + make_pipeline(estimator)._repr_html_()
scores = cross_val_score(estimator, Xi, yi, cv=3)
report["cv_scores"] = scores.tolist()
assert not hasattr(estimator, "model_id_")  # cross_val_score fitted clones

os.environ["API_URL"], os.environ["TABPFN_API_KEY"] = URL, account["api_key"]
pipe = make_pipeline(StandardScaler(), RemoteTabPFNClassifier())  # URL and key from env
pipe.fit(Xi, yi)
probabilities = pipe.predict_proba(Xi[:4])
assert probabilities.shape == (4, 3) and np.allclose(probabilities.sum(axis=1), 1)
assert pipe.predict(Xi[:4]).dtype == yi.dtype
assert list(pipe[-1].classes_) == [0, 1, 2]
report["pipeline_score"] = pipe.score(Xi, yi)

# A grid of numpy values (np.int64 is no JSON number to the standard library).
grid = GridSearchCV(RemoteTabPFNClassifier(), {"n_estimators": np.arange(1, 3)}, cv=2)
grid.fit(X.iloc[::3], y.iloc[::3])
assert grid.best_params_["n_estimators"] in (1, 2)
assert set(grid.predict(X.iloc[:3])) <= {"setosa", "versicolor", "virginica"}

Xd, yd = load_diabetes(return_X_y=True)
seeded = RemoteTabPFNRegressor(n_estimators=2, random_state=np.random.RandomState(0))
regressor = seeded.fit(Xd[:120], yd[:120])
predicted = regressor.predict(Xd[120:140])
assert predicted.shape == (20,) and predicted.dtype == float
low, high = regressor.predict(Xd[120:125], output_type="quantiles", quantiles=[0.1, 0.9])
assert (low <= high).all()
report["regressor_r2"] = regressor.score(Xd[120:200], yd[120:200])
print(json.dumps(report))
"""


def test_sdk_client_and_estimators(sdk_venv: Path, stack: Stack):
    started = time.monotonic()
    # A token no account holds yet: the job counts in the script are its own.
    run = _python(
        sdk_venv, SDK_SCRIPT, API_URL=stack.api_url, IRIS=str(IRIS), TABPFN_TOKEN=fresh_token()
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-3000:]}"
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["accuracy"] >= 0.8, report
    assert len(report["cv_scores"]) == 3 and min(report["cv_scores"]) >= 0.7, report
    assert report["pipeline_score"] >= 0.8, report
    assert report["bad_key_code"] == "unauthorized"
    assert time.monotonic() - started < 120


def test_sdk_and_cli_report_a_failed_job_with_its_code(
    sdk_venv: Path, stack: Stack, api, emulator_knobs
):
    key = register(api, "dave-token")["Authorization"].removeprefix("Bearer ")
    emulator_knobs(revoked_tokens=["dave-token"])
    run = _python(
        sdk_venv,
        "from tabpfn_api_client import Client, JobFailedError\n"
        "try:\n"
        "    Client().fit([[1.0], [2.0], [3.0], [4.0]], ['a', 'a', 'b', 'b']).wait(timeout=60)\n"
        "except JobFailedError as exc:\n"
        "    print(exc.code, exc.job['status'])\n",
        API_URL=stack.api_url,
        TABPFN_API_KEY=key,
    )
    assert run.stdout.split() == ["upstream_auth_failed", "failed"], run.stdout + run.stderr

    train = sdk_venv.parent / "tiny.csv"
    train.write_text("x,label\n1,a\n2,a\n3,b\n4,b\n")
    cli = _cli(sdk_venv, stack, "fit", str(train), "--target", "label", TABPFN_API_KEY=key)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "upstream_auth_failed" in cli.stderr and "failed" in cli.stderr
    assert "tabpfn-api-client token" in cli.stderr  # the message says what to do

    # ... which is: a new token for the same account, then the same fit succeeds.
    replaced = _cli(sdk_venv, stack, "token", "--token", fresh_token(), TABPFN_API_KEY=key)
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    again = _cli(sdk_venv, stack, "fit", str(train), "--target", "label", TABPFN_API_KEY=key)
    assert again.returncode == 0, again.stdout + again.stderr


def test_sdk_wait_shows_the_job_running_while_it_fits(
    sdk_venv: Path, stack: Stack, api, emulator_knobs
):
    """A long-poll answers when the job ends, not when its stage changes: the CLI's
    progress line read "queued" for a whole fit until `wait(on_update=)` asked often."""
    key = register(api)["Authorization"].removeprefix("Bearer ")
    emulator_knobs(latency_s=2.0)  # every upstream call (the stack times one out at 3 s)
    run = _python(
        sdk_venv,
        "import json\n"
        "from tabpfn_api_client import AuthenticationError, Client\n"
        "seen = []\n"
        "job = Client().fit([[1.0], [2.0], [3.0], [4.0]], ['a', 'a', 'b', 'b'])\n"
        "job.wait(timeout=60, on_update=lambda j: seen.append([j.status, j.stage]))\n"
        "try:\n"
        "    Client(api_key='').me()\n"
        "except AuthenticationError as exc:\n"
        "    seen.append(['no key', exc.code])\n"
        "print(json.dumps(seen))\n",
        API_URL=stack.api_url,
        TABPFN_API_KEY=key,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert ["running", "fitting"] in seen, seen
    assert seen[-2] == ["succeeded", None] and seen[-1] == ["no key", "unauthorized"], seen


# -- the CLI end to end ------------------------------------------------------------


@pytest.fixture(scope="module")
def iris_files(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """Train and test CSVs (every fifth flower held out); one training cell left empty."""
    with IRIS.open(newline="") as file:
        header, *rows = list(csv.reader(file))
    folder = tmp_path_factory.mktemp("iris")
    train, test = folder / "train.csv", folder / "test.csv"
    train_rows = [r for i, r in enumerate(rows) if i % 5 != 4]
    train_rows[0][1] = ""
    test_rows = [r for i, r in enumerate(rows) if i % 5 == 4]
    for path, part in ((train, train_rows), (test, test_rows)):
        with path.open("w", newline="") as file:
            csv.writer(file).writerows([header, *part])
    return train, test, [r[-1] for r in test_rows]


def test_cli_end_to_end(sdk_venv: Path, stack: Stack, iris_files, tmp_path: Path):
    train, test, truth = iris_files
    # A token of its own: the job list below is this test's alone.
    setup = _cli(sdk_venv, stack, "--json", "setup", "--token", fresh_token())
    assert setup.returncode == 0, setup.stderr
    account = json.loads(setup.stdout)
    ISSUED_SECRETS.extend([account["api_key"], account["webhook_secret"]])
    key = {"TABPFN_API_KEY": account["api_key"]}

    fit = _cli(sdk_venv, stack, "fit", str(train), "--target", "species", **key)
    assert fit.returncode == 0, fit.stdout + fit.stderr
    model_id = re.search(r"^model_id\s+(\S+)$", fit.stdout, re.M).group(1)
    assert re.search(r"^classes\s+setosa, versicolor, virginica$", fit.stdout, re.M), fit.stdout
    # Progress (not a terminal: one line per change) ends with the final state.
    assert re.search(r"fit job \S+: succeeded", fit.stderr), fit.stderr
    assert "task: classification (inferred" in fit.stderr

    preds = tmp_path / "preds.csv"
    predict = _cli(
        sdk_venv,
        stack,
        "predict",
        "--model",
        model_id,
        str(test),
        "-o",
        str(preds),
        "--output",
        "probabilities",
        **key,
    )
    assert predict.returncode == 0, predict.stdout + predict.stderr
    assert "ignoring columns the model was not fitted on: ['species']" in predict.stderr
    # -o FILE: the predictions go to the file, not to the screen as well.
    assert "prediction" not in predict.stdout, predict.stdout
    assert f"wrote 30 predictions to {preds}" in predict.stderr
    with preds.open(newline="") as file:
        written = list(csv.DictReader(file))
    assert len(written) == len(truth) == 30
    assert set(written[0]) == {"prediction", "proba_setosa", "proba_versicolor", "proba_virginica"}
    accuracy = sum(r["prediction"] == t for r, t in zip(written, truth, strict=True)) / 30
    assert accuracy >= 0.8

    both = _cli(
        sdk_venv,
        stack,
        "fit-predict",
        str(train),
        str(test),
        "--target",
        "species",
        "--option",
        "n_estimators=2",
        **key,
    )
    assert both.returncode == 0, both.stdout + both.stderr
    assert re.search(r"^accuracy: (0\.[89]|1\.0)", both.stdout, re.M), both.stdout

    jobs = _cli(sdk_venv, stack, "jobs", **key)
    assert jobs.returncode == 0, jobs.stderr
    # --json after the command, as before it.
    listed = _cli(sdk_venv, stack, "jobs", "--json", "--request-timeout", "20", **key)
    assert listed.returncode == 0, listed.stderr
    assert {"fit", "predict", "fit_predict"} <= {j["type"] for j in json.loads(listed.stdout)}
    assert re.search(r"\sfit_predict\s+succeeded", jobs.stdout), jobs.stdout
    job_id = re.search(r"^(\S+)\s+predict\s+succeeded", jobs.stdout, re.M).group(1)

    waited = _cli(sdk_venv, stack, "wait", job_id, **key)
    assert waited.returncode == 0 and "prediction" in waited.stdout, waited.stderr
    usage = _cli(sdk_venv, stack, "usage", **key)
    assert usage.returncode == 0 and "current_usage" in usage.stdout, usage.stderr
    # The pacing windows as a table (they were printed as cut-off Python dicts).
    assert "{'kind'" not in usage.stdout, usage.stdout
    assert re.search(r"^fit\s+minute\s+\d+ / \d+\s+\d{4}-", usage.stdout, re.M), usage.stdout

    # Failures: non-zero, with the service's message and code.
    unknown = _cli(sdk_venv, stack, "predict", "--model", str(uuid.uuid4()), str(test), **key)
    assert unknown.returncode == 1
    assert "error:" in unknown.stderr and "(model_not_found, HTTP 404)" in unknown.stderr
    bad_key = _cli(sdk_venv, stack, "jobs", TABPFN_API_KEY="tpa_0123456789abcdef_" + "z" * 43)
    assert bad_key.returncode == 1 and "(unauthorized, HTTP 401)" in bad_key.stderr
    no_key = _cli(sdk_venv, stack, "jobs")
    assert no_key.returncode == 2 and "TABPFN_API_KEY" in no_key.stderr
    no_column = _cli(sdk_venv, stack, "fit", str(train), "--target", "nope", **key)
    assert no_column.returncode == 2 and "no column 'nope'" in no_column.stderr


# -- webhooks ------------------------------------------------------------------------


def _load_webhooks_helper():
    # The helper is standard library only: load the file itself, no install needed.
    spec = importlib.util.spec_from_file_location(
        "sdk_webhooks", CLIENT_DIR / "tabpfn_api_client" / "webhooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_scores_numeric_classes_with_a_blank_target(
    sdk_venv: Path, stack: Stack, iris_files, tmp_path: Path
):
    """Classes that are numbers, and a test file whose target has a blank cell:
    pandas reads that column as floats (1.0), the predictions are 1. The score
    compared them as text ("1" != "1.0") and said 0.000 for right answers; the
    row without a target counted as a miss too."""
    train_iris, test_iris, truth = iris_files
    codes = {"setosa": "0", "versicolor": "1", "virginica": "2"}
    paths = {}
    for name, source in (("train", train_iris), ("test", test_iris)):
        with source.open(newline="") as file:
            header, *rows = list(csv.reader(file))
        rows = [[*r[:-1], codes[r[-1]]] for r in rows]
        if name == "test":
            rows[3][-1] = ""  # no target for this row
        paths[name] = tmp_path / f"{name}.csv"
        with paths[name].open("w", newline="") as file:
            csv.writer(file).writerows([header, *rows])
    key = {"TABPFN_API_KEY": _setup_key(sdk_venv, stack)}

    scored = _cli(
        sdk_venv, stack, "fit-predict", str(paths["train"]), str(paths["test"]),
        "--target", "species", "--json", **key,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stdout + scored.stderr
    predictions = json.loads(scored.stdout)["predictions"]
    expected = [int(codes[t]) for t in truth]
    right = sum(
        p == t for i, (p, t) in enumerate(zip(predictions, expected, strict=True)) if i != 3
    )
    assert right >= 0.8 * 29

    shown = _cli(
        sdk_venv, stack, "fit-predict", str(paths["train"]), str(paths["test"]),
        "--target", "species", **key,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"accuracy: {right / 29:.3f} ({right}/29; 1 row without a target)" in shown.stdout


def test_cli_writes_quantile_columns_in_the_quantiles_order(
    sdk_venv: Path, stack: Stack, iris_files, tmp_path: Path
):
    """The result's quantiles come back as a JSON object whose keys JSONB ordered
    by length ("0.5", "0.9", "0.05"): the CLI's table and -o file took that order."""
    train, test, _ = iris_files
    out = tmp_path / "quantiles.csv"
    done = _cli(
        sdk_venv, stack, "fit-predict", str(train), str(test),
        "--target", "sepal_length_cm", "--task", "regression", "--output", "quantiles",
        "--quantiles", "0.9,0.05,0.5,0.25", "-o", str(out),
        TABPFN_API_KEY=_setup_key(sdk_venv, stack),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with out.open(newline="") as file:
        header = next(csv.reader(file))
    assert header == ["prediction", "q0.05", "q0.25", "q0.5", "q0.9"]


QUANTILE_DATA = """
import numpy as np
rng = np.random.default_rng(12)
X = rng.normal(size=(60, 2))
y = 3 * X[:, 0] + rng.normal(size=60)
X_test = X[:6]
QUANTILES = [0.05, 0.5, 0.95]
"""

SDK_QUANTILES = (
    QUANTILE_DATA
    + """
import json, os
from tabpfn_api_client import RemoteTabPFNRegressor
regressor = RemoteTabPFNRegressor(os.environ["API_URL"], os.environ["TABPFN_API_KEY"]).fit(X, y)
arrays = regressor.predict(X_test, output_type="quantiles", quantiles=QUANTILES)
print("RESULT:" + json.dumps([a.tolist() for a in arrays]))
"""
)

DIRECT_QUANTILES = (
    QUANTILE_DATA
    + """
import json
from tabpfn_client import TabPFNRegressor
arrays = TabPFNRegressor().fit(X, y).predict(X_test, output_type="quantiles", quantiles=QUANTILES)
print("RESULT:" + json.dumps([np.asarray(a).tolist() for a in arrays]))
"""
)


def _printed(done: subprocess.CompletedProcess) -> list:
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT:")]
    return json.loads(line.removeprefix("RESULT:"))


def test_sdk_regressor_quantiles_come_in_the_order_asked_as_tabpfn_clients_do(
    sdk_venv: Path, stack: Stack, tmp_path: Path
):
    """`predict(output_type="quantiles", quantiles=[0.05, 0.5, 0.95])` is one array per
    quantile in that order, as tabpfn-client's TabPFNRegressor gives them. The SDK
    took the result object's values(), in JSONB's key order ("0.5" before "0.05"):
    the low bound was the median and the median the low bound."""
    served = _printed(
        _python(
            sdk_venv,
            SDK_QUANTILES,
            API_URL=stack.api_url,
            TABPFN_API_KEY=_setup_key(sdk_venv, stack),
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TABPFN_", "EMULATOR_"))}
    env.update(HOME=str(tmp_path), TABPFN_CLIENT_API_URL=stack.emulator_url)
    env["TABPFN_TOKEN"] = "demo-token"
    direct = _printed(
        subprocess.run(
            [sys.executable, "-c", DIRECT_QUANTILES],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    )
    assert served == direct


DATES_FRAME = """
import numpy as np, pandas as pd
days = pd.to_datetime("2024-01-01") + pd.to_timedelta(np.arange(40) % 4, unit="D")
X = pd.DataFrame({"day": days, "zero": np.zeros(40)})
y = np.array(["a", "b", "c", "d"])[np.arange(40) % 4]
X_test = X.head(8)
"""

SDK_DATES = (
    DATES_FRAME
    + """
import json, os
from tabpfn_api_client import Client
client = Client(os.environ["API_URL"], os.environ["TABPFN_API_KEY"])
fit = client.fit(X, y, task="classification")
fit.wait(60)
predicted = client.predict(fit.model_id, X_test)
predicted.wait(60)
print("RESULT:" + json.dumps({"model_id": fit.model_id, "predictions":
      predicted.result()["predictions"], "truth": y[:8].tolist()}))
"""
)


def test_sdk_sends_datetimes_as_an_upload_of_the_same_frame_stores_them(
    sdk_venv: Path, stack: Stack, api, tmp_path: Path
):
    """A model fitted from a DataFrame with a datetime column, then asked about the
    same rows as a Parquet file: the SDK wrote the dates with isoformat()
    ("2024-01-04T00:00:00"), the upload stores them as the service writes dates
    ("2024-01-04"), and every uploaded row met the model as an unseen category."""
    headers = register(api)
    sent = _printed(
        _python(
            sdk_venv,
            SDK_DATES,
            API_URL=stack.api_url,
            TABPFN_API_KEY=headers["Authorization"].removeprefix("Bearer "),
        )
    )
    frames: dict = {}
    exec(DATES_FRAME, frames)  # the same frame here, where pyarrow is
    test_file = tmp_path / "test.parquet"
    frames["X_test"].to_parquet(test_file, index=False)
    assert sent["predictions"] == sent["truth"]
    response = api.post(
        "/jobs/predict",
        headers=headers,
        data={"model_id": sent["model_id"]},
        files={"file": ("test.parquet", test_file.read_bytes())},
    )
    assert response.status_code == 202, response.text
    job = wait_for_job(api, headers, response.json()["id"])
    assert job["status"] == "succeeded", job
    uploaded = api.get(f"/jobs/{job['id']}/result", headers=headers).json()
    assert uploaded["predictions"] == sent["truth"]


def test_cli_reads_a_csv_as_the_service_reads_it_uploaded(stack: Stack, api, tmp_path: Path):
    """The CLI reads the file with pandas and sends JSON; pandas 2's default float
    parser read 11.283999999999999 as 11.284 (one unit in the last place off), where
    the service's own CSV reader, for the same file uploaded, keeps the number
    written: the same file fitted two tables, and their answers differed. Run with
    this interpreter (pandas 2; pandas 3 reads them exactly by default), the SDK from
    its source."""
    headers = register(api)
    written = ["11.283999999999999", "3.9370000000000003", "-0.19999999999999996", "1.5"]
    train = tmp_path / "train.csv"
    train.write_text("x,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(written * 3)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TABPFN_", "API_URL"))}
    env.update(
        PYTHONPATH=str(CLIENT_DIR),
        API_URL=stack.api_url,
        TABPFN_API_KEY=headers["Authorization"].removeprefix("Bearer "),
    )
    fit = subprocess.run(
        [sys.executable, "-m", "tabpfn_api_client.cli", "--json", "fit", str(train),
         "--target", "y", "--task", "regression"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stdout + fit.stderr
    response = api.post(
        "/jobs/fit",
        headers=headers,
        data={"task": "regression", "target": "y"},
        files={"file": ("train.csv", train.read_bytes())},
    )
    assert response.status_code == 202, response.text
    import pandas as pd

    targets = []
    for job_id in (_fit_job_id(stack, json.loads(fit.stdout)["model_id"]), response.json()["id"]):
        [(data,)] = stack.sql(
            "SELECT train_parquet FROM job_data WHERE job_id = CAST(:id AS uuid)", id=job_id
        )
        targets.append(pd.read_parquet(io.BytesIO(data)).iloc[:, -1].tolist())
    assert targets[0] == targets[1] == [float(v) for v in written * 3]


def _fit_job_id(stack: Stack, model_id: str) -> str:
    [(job_id,)] = stack.sql(
        "SELECT fit_job_id FROM fitted_models WHERE id = CAST(:id AS uuid)", id=model_id
    )
    return str(job_id)


def _setup_key(venv: Path, stack: Stack) -> str:
    setup = _cli(venv, stack, "--json", "setup", "--token", fresh_token())
    assert setup.returncode == 0, setup.stderr
    account = json.loads(setup.stdout)
    ISSUED_SECRETS.extend([account["api_key"], account["webhook_secret"]])
    return account["api_key"]


def test_webhook_helper_matches_standard_webhooks():
    helper = _load_webhooks_helper()
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    body = json.dumps({"type": "job.succeeded", "data": {"job_id": "j1"}})
    now = datetime.now(tz=UTC)
    msg_id = "msg_" + uuid.uuid4().hex
    headers = {
        "Webhook-Id": msg_id,  # any case
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
    }
    assert helper.verify_webhook(body.encode(), headers, secret)["data"]["job_id"] == "j1"
    # Our signature is the library's, and the library accepts ours.
    ours = helper.sign_webhook(secret, msg_id, int(now.timestamp()), body)
    assert ours == headers["webhook-signature"]
    Webhook(secret).verify(body, {**headers, "webhook-signature": ours})
    # Several signatures (a secret rotation): one that matches is enough.
    other = helper.sign_webhook("whsec_" + base64.b64encode(b"x" * 24).decode(), msg_id, 1, body)
    rotated = {**headers, "webhook-signature": f"{other} v2,abc {ours}"}
    assert helper.verify_webhook(body, rotated, secret)["type"] == "job.succeeded"

    refused = {
        "tampered body": (body.replace("j1", "j2"), headers),
        "old timestamp": (body, {**headers, "webhook-timestamp": str(int(time.time()) - 301)}),
        "future timestamp": (body, {**headers, "webhook-timestamp": str(int(time.time()) + 301)}),
        "wrong secret": (body, {**headers, "webhook-signature": other}),
        "another id": (body, {**headers, "Webhook-Id": "msg_other"}),
        "missing signature": (body, {k: v for k, v in headers.items() if "sig" not in k}),
        "garbage signature": (body, {**headers, "webhook-signature": "v1,%%%"}),
    }
    for case, (data, hdrs) in refused.items():
        with pytest.raises(helper.WebhookVerificationError):
            helper.verify_webhook(data, hdrs, secret)
            pytest.fail(f"accepted: {case}")
    # A signature older than the tolerance is refused even when it is genuine.
    stale = datetime.fromtimestamp(time.time() - 600, tz=UTC)
    stale_headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stale.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, stale, body),
    }
    with pytest.raises(helper.WebhookVerificationError, match="too old"):
        helper.verify_webhook(body, stale_headers, secret)


@pytest.fixture
def webhook_receiver(sdk_venv: Path, tmp_path: Path) -> Iterator:
    processes = []

    def start(secret: str) -> tuple[str, Path]:
        out, err = tmp_path / "events.jsonl", tmp_path / "receiver.err"
        process = subprocess.Popen(
            [
                str(sdk_venv / "bin" / "python"),
                str(EXAMPLES / "webhook_receiver.py"),
                "--port",
                "0",
            ],
            stdout=out.open("w"),
            stderr=err.open("w"),
            env=_env(sdk_venv, WEBHOOK_SECRET=secret),
        )
        processes.append(process)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r"listening on (\S+)", err.read_text())
            if found:
                return found.group(1).rstrip("/"), out
            assert process.poll() is None, err.read_text()
            time.sleep(0.1)
        raise AssertionError(f"the receiver did not start: {err.read_text()}")

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


def test_cli_first_hour_polish(sdk_venv: Path, stack: Stack, iris_files):
    train, _, _ = iris_files
    # A refused key: the error alone, no "task: … (inferred" note before it.
    refused = _cli(
        sdk_venv, stack, "fit", str(train), "--target", "species",
        TABPFN_API_KEY="tpa_0000000000000000_" + "x" * 43,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "task:" not in refused.stderr and "unauthorized" in refused.stderr, refused.stderr

    # No service at the URL: said within seconds, with what to start.
    started = time.monotonic()
    down = _run(
        sdk_venv,
        [str(sdk_venv / "bin" / "tabpfn-api-client"), "jobs"],
        API_URL=f"http://127.0.0.1:{free_port()}",
        TABPFN_API_KEY="tpa_0000000000000000_" + "x" * 43,
    )
    assert time.monotonic() - started < 8
    assert down.returncode == 1
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 1 and "tabpfn-api dev" in lines[0] and "API_URL" in lines[0], lines
    # A URL without its scheme: said as such, not as a transport failure.
    schemeless = _run(
        sdk_venv,
        [str(sdk_venv / "bin" / "tabpfn-api-client"), "jobs"],
        API_URL="127.0.0.1:8000",
        TABPFN_API_KEY="tpa_0000000000000000_" + "x" * 43,
    )
    assert schemeless.returncode == 1
    assert "does not start with http:// or https://" in schemeless.stderr, schemeless.stderr
    assert schemeless.stderr.startswith("error: ") and "Traceback" not in schemeless.stderr

    # A service that takes the request and never answers: not "is it running?", and a
    # submit says it may have been carried out.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        held = []
        taker = threading.Thread(
            target=lambda: [held.append(silent.accept()) for _ in range(8)], daemon=True
        )
        taker.start()
        mute = _run(
            sdk_venv,
            [str(sdk_venv / "bin" / "tabpfn-api-client"), "fit", str(train), "--target",
             "species", "--request-timeout", "1"],
            API_URL=f"http://127.0.0.1:{silent.getsockname()[1]}",
            TABPFN_API_KEY="tpa_0000000000000000_" + "x" * 43,
        )  # fmt: skip
        for connection, _ in held:
            connection.close()
    assert mute.returncode == 1
    assert "did not answer in time" in mute.stderr, mute.stderr
    assert "may have reached the service" in mute.stderr and "tabpfn-api dev" not in mute.stderr

    # --help shows examples, for the program and for a command.
    for args in (["--help"], ["fit", "--help"], ["predict", "--help"]):
        helped = _cli(sdk_venv, stack, *args)
        assert helped.returncode == 0 and "examples:" in helped.stdout, helped.stdout


def test_webhook_receiver_example_verifies_real_events(
    sdk_venv: Path, stack: Stack, api, webhook_receiver, iris_files
):
    response = api.post("/auth/setup", json={"tabpfn_token": "demo-token"})
    account = response.json()
    ISSUED_SECRETS.extend([account["api_key"], account["webhook_secret"]])
    url, events = webhook_receiver(account["webhook_secret"])
    train, _, _ = iris_files
    fit = _cli(
        sdk_venv,
        stack,
        "fit",
        str(train),
        "--target",
        "species",
        "--callback-url",
        f"{url}/hooks/tabpfn",
        "--meta",
        "run=example",
        TABPFN_API_KEY=account["api_key"],
    )
    assert fit.returncode == 0, fit.stdout + fit.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not events.read_text().strip():
        time.sleep(0.2)
    lines = events.read_text().strip().splitlines()
    assert lines, f"no verified event arrived\n{stack.logs()}"
    event = json.loads(lines[0])
    assert event["type"] == "job.succeeded" and event["job_type"] == "fit"
    assert event["model_id"] and event["webhook_id"]
    assert event["metadata"] == {"run": "example"}


# -- beyond Python ------------------------------------------------------------------


def _accuracy(output: str) -> float:
    found = re.search(r"Accuracy on the 30 test rows: ([0-9.]+)", output)
    assert found, output
    return float(found.group(1))


def test_node_quickstart(stack: Stack):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node quickstart needs Node 18 or newer")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    if int(version.lstrip("v").split(".")[0]) < 18:
        pytest.skip(f"node {version.strip()} has no global fetch; the quickstart needs Node 18+")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABPFN_")}
    run = subprocess.run(
        [node, str(EXAMPLES / "quickstart.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "API_URL": stack.api_url},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Model " in run.stdout and "predict job: succeeded" in run.stdout
    assert _accuracy(run.stdout) >= 0.8

    refused = subprocess.run(
        [node, str(EXAMPLES / "quickstart.mjs")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "API_URL": stack.api_url, "TABPFN_TOKEN": "not-a-token"},
    )
    assert refused.returncode == 1 and "(upstream_auth_failed)" in refused.stderr

    nobody = f"http://127.0.0.1:{free_port()}"  # no service: fetch said only "fetch failed"
    down = subprocess.run(
        [node, str(EXAMPLES / "quickstart.mjs")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "API_URL": nobody},
    )
    assert down.returncode == 1, down.stdout + down.stderr
    assert f"could not reach {nobody} (ECONNREFUSED)" in down.stderr, down.stderr


def test_curl_quickstart(stack: Stack):
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("curl and bash are needed for the shell quickstart")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABPFN_")}
    run = subprocess.run(
        ["bash", str(EXAMPLES / "quickstart.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "API_URL": stack.api_url},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"job \S+: succeeded", run.stderr), run.stderr
    assert _accuracy(run.stdout) >= 0.8

    refused = subprocess.run(
        ["bash", str(EXAMPLES / "quickstart.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "API_URL": stack.api_url, "TABPFN_TOKEN": "not-a-token"},
    )
    assert refused.returncode == 1 and "(upstream_auth_failed)" in refused.stderr


DELETE_ACCOUNT_SCRIPT = """
from tabpfn_api_client import AuthenticationError, Client
client = Client()
client.fit([[1.0], [2.0], [3.0], [4.0]], ["a", "a", "b", "b"]).wait(timeout=60)
client.delete_account()
print(client.api_key)  # forgotten
try:
    Client().me()  # the key, from the environment again
except AuthenticationError as exc:
    print(exc.code)
"""


def test_sdk_and_cli_delete_an_account(sdk_venv: Path, stack: Stack, api):
    sdk_key = register(api)["Authorization"].removeprefix("Bearer ")
    run = _python(sdk_venv, DELETE_ACCOUNT_SCRIPT, API_URL=stack.api_url, TABPFN_API_KEY=sdk_key)
    assert run.stdout.split() == ["None", "unauthorized"], run.stdout + run.stderr

    cli_key = register(api)["Authorization"].removeprefix("Bearer ")
    unconfirmed = _cli(sdk_venv, stack, "delete-account", TABPFN_API_KEY=cli_key)
    assert unconfirmed.returncode != 0 and "--yes" in unconfirmed.stderr
    assert api.get("/auth/me", headers={"Authorization": f"Bearer {cli_key}"}).status_code == 200
    deleted = _cli(sdk_venv, stack, "delete-account", "--yes", TABPFN_API_KEY=cli_key)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    gone = api.get("/auth/me", headers={"Authorization": f"Bearer {cli_key}"})
    assert (gone.status_code, gone.json()["code"]) == (401, "unauthorized")


KEYS_SCRIPT = """
from tabpfn_api_client import AuthenticationError, Client
client = Client()
made = client.create_key("sdk-made")
names = {k["id"]: k["name"] for k in client.list_keys()}
print(names[made["key_id"]], len(names))
client.revoke_key(made["key_id"])
try:
    Client(api_key=made["api_key"]).me()
except AuthenticationError as exc:
    print(exc.code)
"""


def test_sdk_and_cli_make_name_list_and_revoke_keys(sdk_venv: Path, stack: Stack, api):
    key = register(api)["Authorization"].removeprefix("Bearer ")
    run = _python(sdk_venv, KEYS_SCRIPT, API_URL=stack.api_url, TABPFN_API_KEY=key)
    assert run.stdout.split() == ["sdk-made", "2", "unauthorized"], run.stdout + run.stderr

    made = _cli(sdk_venv, stack, "new-key", "--name", "cli-made", "--json", TABPFN_API_KEY=key)
    assert made.returncode == 0, made.stdout + made.stderr
    new = json.loads(made.stdout)
    ISSUED_SECRETS.append(new["api_key"])
    assert new["name"] == "cli-made"
    listed = _cli(sdk_venv, stack, "keys", TABPFN_API_KEY=key)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    row = next(line for line in listed.stdout.splitlines() if new["key_id"] in line)
    assert "cli-made" in row and "active" in row
    assert "tpa_" not in listed.stdout
    revoked = _cli(sdk_venv, stack, "revoke-key", new["key_id"], TABPFN_API_KEY=key)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    gone = api.get("/auth/me", headers={"Authorization": f"Bearer {new['api_key']}"})
    assert gone.status_code == 401


METADATA_SCRIPT = """
from tabpfn_api_client import Client
client = Client()
fit = client.fit([[1.0], [2.0], [3.0], [4.0]], ["a", "a", "b", "b"], metadata={"run": "sdk-7"})
done = fit.wait(timeout=60)
other = client.fit([[1.0], [2.0], [3.0], [4.0]], ["a", "a", "b", "b"], metadata={"run": "x"})
other.wait(timeout=60)  # no job of this test outlives it
print(done.metadata["run"], [j.id for j in client.list_jobs(metadata={"run": "sdk-7"})] == [fit.id])
print(sum(1 for _ in client.iter_jobs(metadata={"run": "x"})))
# Changed after the end: set one, remove one; then every pair.
changed = client.update_job(other.id, metadata={"run": None, "stage": "kept"})
print(changed.metadata, client.get_job(other.id).metadata)
print(other.update(metadata=None).metadata, other.refresh().metadata)
# Models: the fit's labels, changed apart; found by them, across pages of one.
model = client.update_model(done.model_id, metadata={"name": "churn"})
print(model["metadata"], client.get_model(other.model_id)["metadata"])
print([m["id"] for m in client.list_models(metadata={"run": "sdk-7"})] == [done.model_id])
client.update_model(other.model_id, metadata={"name": "churn"})
third = client.fit([[1.0], [2.0], [3.0], [4.0]], ["a", "a", "b", "b"], metadata={"run": "sdk-7"})
client.update_model(third.wait(timeout=60).model_id, metadata={"name": "churn"})
# Pages of one keep both filters: `other`, between the two, is named so but not run so.
found = client.iter_models(metadata={"run": "sdk-7", "name": "churn"}, page_size=1)
print([m["id"] for m in found] == [third.model_id, done.model_id])
"""


def test_sdk_and_cli_label_jobs_and_find_them_by_their_labels(
    sdk_venv: Path, stack: Stack, api, iris_files
):
    key = register(api)["Authorization"].removeprefix("Bearer ")
    run = _python(sdk_venv, METADATA_SCRIPT, API_URL=stack.api_url, TABPFN_API_KEY=key)
    assert run.stdout.splitlines() == [
        "sdk-7 True",
        "1",
        "{'stage': 'kept'} {'stage': 'kept'}",
        "None None",
        "{'run': 'sdk-7', 'name': 'churn'} {'run': 'x'}",
        "True",
        "True",
    ], run.stdout + run.stderr

    train, _, _ = iris_files
    labels = ("--meta", "run=cli-9", "--meta", "team=growth")
    fit = _cli(
        sdk_venv,
        stack,
        "fit",
        str(train),
        "--target",
        "species",
        *labels,
        "--no-wait",
        TABPFN_API_KEY=key,
    )
    assert fit.returncode == 0, fit.stdout + fit.stderr
    job_id = fit.stdout.split()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    wait_for_job(api, headers, job_id)
    assert api.get(f"/jobs/{job_id}", headers=headers).json()["metadata"] == {
        "run": "cli-9",
        "team": "growth",
    }
    found = _cli(sdk_venv, stack, "jobs", "--meta", "run=cli-9", "--json", TABPFN_API_KEY=key)
    assert found.returncode == 0, found.stdout + found.stderr
    assert [j["id"] for j in json.loads(found.stdout)] == [job_id]
    table = _cli(sdk_venv, stack, "jobs", "--meta", "run=cli-9", TABPFN_API_KEY=key)
    header, _, row = table.stdout.strip().splitlines()
    assert header.split()[-1] == "metadata" and job_id in row, table.stdout
    assert set(row.split()[-2:]) == {"run=cli-9", "team=growth"}, row
    bad = _cli(sdk_venv, stack, "jobs", "--meta", "run", TABPFN_API_KEY=key)
    assert bad.returncode != 0 and "KEY=VALUE" in bad.stderr

    # `label` changes them after the submit.
    label = ("label", job_id, "--meta", "team=ops", "--meta", "stage=live", "--unset", "run")
    relabelled = _cli(sdk_venv, stack, *label, TABPFN_API_KEY=key)
    assert relabelled.returncode == 0, relabelled.stdout + relabelled.stderr
    assert relabelled.stdout.strip() == f"fit job {job_id}: team=ops, stage=live"
    assert api.get(f"/jobs/{job_id}", headers=headers).json()["metadata"] == {
        "team": "ops",
        "stage": "live",
    }
    cleared = _cli(sdk_venv, stack, "label", job_id, "--clear", "--json", TABPFN_API_KEY=key)
    assert json.loads(cleared.stdout)["metadata"] is None, cleared.stdout + cleared.stderr
    nothing = _cli(sdk_venv, stack, "label", job_id, TABPFN_API_KEY=key)
    assert nothing.returncode != 0 and "Nothing to change" in nothing.stderr
    both = _cli(
        sdk_venv, stack, "label", job_id, "--meta", "a=1", "--unset", "a", TABPFN_API_KEY=key
    )
    assert both.returncode != 0 and "both name a" in both.stderr
    too_long = _cli(
        sdk_venv, stack, "label", job_id, "--meta", "k=" + "x" * 513, TABPFN_API_KEY=key
    )
    assert too_long.returncode != 0 and "513 characters" in too_long.stderr

    # A model: named with `label --model`, found with `models --meta`.
    model_id = api.get(f"/jobs/{job_id}", headers=headers).json()["model_id"]
    named = _cli(
        sdk_venv, stack, "label", "--model", model_id, "--meta", "name=iris", TABPFN_API_KEY=key
    )
    assert named.returncode == 0, named.stdout + named.stderr
    assert named.stdout.strip() == f"model {model_id}: run=cli-9, team=growth, name=iris"
    models = _cli(sdk_venv, stack, "models", "--meta", "name=iris", TABPFN_API_KEY=key)
    assert models.returncode == 0, models.stdout + models.stderr
    assert model_id in models.stdout and "name=iris" in models.stdout
    assert len(models.stdout.strip().splitlines()) == 3  # the header, its rule, one model


DELETE_JOB_SCRIPT = """
from tabpfn_api_client import Client, ConflictError, NotFoundError
client = Client()
done = client.fit([[1.0], [2.0], [3.0], [4.0]], ["a", "a", "b", "b"]).wait(timeout=60)
client.delete_job(done.id)
try:
    client.get_job(done.id)
except NotFoundError as exc:
    print(exc.code)
print(client.get_model(done.model_id)["fit_job_id"] == done.id)
# The cleanup loops: delete as you iterate, across pages (of 2 here).
for _ in range(4):
    client.fit([[1.0], [2.0], [3.0], [4.0]], ["a", "a", "b", "b"]).wait(timeout=60)
deleted_jobs = sum(1 for job in client.iter_jobs(page_size=2) if client.delete_job(job.id) is None)
deleted_models = sum(
    1 for model in client.iter_models(page_size=2) if client.delete_model(model["id"]) is None
)
print(deleted_jobs, deleted_models, client.list_jobs(), client.list_models())

# A delete whose answer is lost after the service carried it out: the retry's 404 is
# the call's success. A delete of what was never there is still NotFoundError.
import httpx


class LosesFirstDelete(httpx.BaseTransport):
    def __init__(self):
        self.inner, self.deletes = httpx.HTTPTransport(), 0

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        if request.method == "DELETE":
            self.deletes += 1
            if self.deletes == 1:
                response.read()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


lossy = LosesFirstDelete()
retrying = Client(transport=lossy, backoff_s=0.01)  # URL and key from the environment
again = client.fit([[1.0], [2.0], [3.0], [4.0]], ["a", "a", "b", "b"]).wait(timeout=60)
print(retrying.delete_job(again.id), lossy.deletes, [j.id for j in client.list_jobs()])
try:
    retrying.delete_job(again.id)
except NotFoundError as exc:
    print(exc.code)
"""


def test_sdk_and_cli_delete_a_finished_job(sdk_venv: Path, stack: Stack, api, emulator_knobs):
    key = register(api)["Authorization"].removeprefix("Bearer ")
    run = _python(sdk_venv, DELETE_JOB_SCRIPT, API_URL=stack.api_url, TABPFN_API_KEY=key)
    assert run.stdout.splitlines() == [
        "not_found",
        "True",
        "4 5 [] []",
        "None 2 []",
        "not_found",
    ], run.stdout + run.stderr

    headers = {"Authorization": f"Bearer {key}"}
    emulator_knobs(hang_s=60.0)  # the fit call hangs until the knob goes back to 0
    train = {"X": [[1.0], [2.0], [3.0], [4.0]], "y": ["a", "a", "b", "b"]}
    running = api.post(
        "/jobs/fit", json={"task": "classification", "train": train}, headers=headers
    )
    job_id = running.json()["id"]
    refused = _cli(sdk_venv, stack, "delete-job", job_id, TABPFN_API_KEY=key)
    assert refused.returncode == 1 and "(job_not_finished, HTTP 409)" in refused.stderr
    assert api.post(f"/jobs/{job_id}/cancel", headers=headers).status_code == 200
    deleted = _cli(sdk_venv, stack, "delete-job", job_id, TABPFN_API_KEY=key)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert api.get(f"/jobs/{job_id}", headers=headers).status_code == 404
    emulator_knobs(hang_s=0.0)


TIMEOUT_SCRIPT = """
from tabpfn_api_client import JobTimeoutError, RemoteTabPFNClassifier
estimator = RemoteTabPFNClassifier(job_timeout=2)
estimator.model_id_ = "an earlier fit's model"
try:
    estimator.fit([[1.0], [2.0], [3.0], [4.0]], ["a", "a", "b", "b"])
except JobTimeoutError as exc:
    print(exc.code, exc.args[0].split()[1], hasattr(estimator, "model_id_"))
"""


def test_an_estimator_cancels_the_job_it_stopped_waiting_for(
    sdk_venv: Path, stack: Stack, api, emulator_knobs
):
    headers = register(api)
    key = headers["Authorization"].removeprefix("Bearer ")
    emulator_knobs(hang_s=60.0)  # the fit call hangs until the knob goes back to 0
    try:
        run = _python(sdk_venv, TIMEOUT_SCRIPT, API_URL=stack.api_url, TABPFN_API_KEY=key)
    finally:
        emulator_knobs(hang_s=0.0)
    code, job_id, still_fitted = run.stdout.split()
    assert code == "timeout", run.stdout + run.stderr
    assert still_fitted == "False"  # the failed refit left no earlier model behind
    # Canceled, not left to spend the account's quota on a result nobody waits for.
    assert wait_for_job(api, headers, job_id)["status"] == "canceled"


def test_the_cli_says_a_job_it_stopped_waiting_for_goes_on(
    sdk_venv: Path, stack: Stack, api, iris_files, emulator_knobs
):
    train, _, _ = iris_files
    headers = register(api)
    key = headers["Authorization"].removeprefix("Bearer ")
    emulator_knobs(hang_s=60.0)  # the fit call hangs until the knob goes back to 0
    try:
        fit = _cli(sdk_venv, stack, "fit", str(train), "--target", "species", "--timeout", "1",
                   TABPFN_API_KEY=key)  # fmt: skip
    finally:
        emulator_knobs(hang_s=0.0)
    assert fit.returncode == 124, fit.stdout + fit.stderr
    job_id = re.search(r"tabpfn-api-client wait (\S+)`", fit.stderr).group(1)
    assert "did not finish within 1" in fit.stderr
    # Not canceled: the CLI's job goes on, and `wait` finds it done.
    assert wait_for_job(api, headers, job_id)["status"] == "succeeded"


FILES_SCRIPT = """
import os, sys
import pandas as pd
from tabpfn_api_client import Client, ValidationError
train, test, folder = sys.argv[1:4]
client = Client()
# A fit from the file as it is; a predict from a file of the model's columns only.
fit = client.fit_file(train, target="species", metadata={"run": "files"}, wait=60)
flowers = os.path.join(folder, "flowers.csv")
pd.read_csv(test).drop(columns=["species"]).to_csv(flowers, index=False)
predicted = client.predict_file(fit.model_id, flowers, output="probabilities", wait=60)
result = predicted.result()
print(fit.status, fit.metadata, len(result["predictions"]), len(result["probabilities"][0]))
# Both in one job, from Parquet and CSV, a regression with quantiles.
no_width = os.path.join(folder, "no_width.csv")
pd.read_csv(flowers).drop(columns=["petal_width_cm"]).to_csv(no_width, index=False)
job = client.fit_predict_files(
    os.path.join(folder, "train.parquet"), no_width, target="petal_width_cm",
    task="regression", options={"n_estimators": 2}, quantiles=[0.1, 0.9], wait=60,
)
result = job.result()
print(job.status, sorted(result["quantiles"]), len(result["predictions"]))
# The service's refusals as for JSON; a missing file before anything is sent.
try:
    client.fit_file(train, target="no_such_column")
except ValidationError as exc:
    print(exc.code, exc.status_code)
try:
    client.fit_file(os.path.join(folder, "missing.csv"), target="species")
except ValidationError as exc:
    print(exc.code, exc.status_code, "No such file" in str(exc))
"""


def test_sdk_uploads_files_as_they_are(sdk_venv: Path, stack: Stack, api, iris_files, tmp_path):
    train, test, truth = iris_files
    key = register(api)["Authorization"].removeprefix("Bearer ")
    # Parquet written here: the SDK alone does not install pyarrow.
    frame = pd.read_csv(train).drop(columns=["species"])
    frame.to_parquet(tmp_path / "train.parquet")
    run = subprocess.run(
        [
            str(sdk_venv / "bin" / "python"),
            "-c",
            FILES_SCRIPT,
            str(train),
            str(test),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "API_URL": stack.api_url, "TABPFN_API_KEY": key},
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"succeeded {{'run': 'files'}} {len(truth)} 3", lines
    assert lines[1] == f"succeeded ['0.1', '0.9'] {len(truth)}", lines
    assert lines[2] == "validation_error 422", lines
    assert lines[3] == "validation_error None True", lines


AUTO_UPLOAD_SCRIPT = """
import sys
from tabpfn_api_client import cli
cli.UPLOAD_OVER_BYTES = 1  # every file is "big": it goes as it is when the job takes it so
sys.exit(cli.main(sys.argv[1:]))
"""


def test_cli_uploads_files_as_they_are(sdk_venv: Path, stack: Stack, api, iris_files, tmp_path):
    train, test, truth = iris_files
    headers = register(api)
    key = headers["Authorization"].removeprefix("Bearer ")
    fit = _cli(
        sdk_venv,
        stack,
        "fit",
        str(train),
        "--target",
        "species",
        "--upload",
        "--json",
        TABPFN_API_KEY=key,
    )
    assert fit.returncode == 0, fit.stdout + fit.stderr
    assert f"uploading {train} as they are" in fit.stderr
    model_id = json.loads(fit.stdout)["model_id"]

    # A predict file with a column the model was not fitted on: --upload refuses it
    # (the service would), without it the CLI drops the column and sends JSON rows.
    refused = _cli(
        sdk_venv, stack, "predict", "--model", model_id, str(test), "--upload", TABPFN_API_KEY=key
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "does not hold exactly the model's columns" in refused.stderr
    # A file pandas reads here but the service does not take (a .txt CSV): not uploaded.
    text = tmp_path / "flowers.txt"
    text.write_bytes(test.read_bytes())
    foreign = _cli(sdk_venv, stack, "fit", str(text), "--target", "species", "--upload",
                   TABPFN_API_KEY=key)  # fmt: skip
    assert foreign.returncode == 2 and "takes .csv and .parquet files" in foreign.stderr
    flowers = tmp_path / "flowers.csv"
    pd.read_csv(test).drop(columns=["species"]).to_csv(flowers, index=False)
    predicted = _cli(
        sdk_venv,
        stack,
        "predict",
        "--model",
        model_id,
        str(flowers),
        "--upload",
        "--json",
        TABPFN_API_KEY=key,
    )
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    assert len(json.loads(predicted.stdout)["predictions"]) == len(truth)

    # Over the size: uploaded when the job takes the files unchanged, else JSON rows.
    env = {"API_URL": stack.api_url, "TABPFN_API_KEY": key}
    args = ["fit-predict", str(train), str(flowers), "--target", "species", "--json"]
    uploaded = _run(
        sdk_venv, [str(sdk_venv / "bin" / "python"), "-c", AUTO_UPLOAD_SCRIPT, *args], **env
    )
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    assert "as they are" in uploaded.stderr
    assert len(json.loads(uploaded.stdout)["predictions"]) == len(truth)
    args = ["fit-predict", str(train), str(test), "--target", "species", "--json"]
    scored = _run(
        sdk_venv, [str(sdk_venv / "bin" / "python"), "-c", AUTO_UPLOAD_SCRIPT, *args], **env
    )
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert "as they are" not in scored.stderr  # its test file holds the target: JSON rows
