"""Contract tests: the real tabpfn-client, unmocked, against the emulator.

The client reads TABPFN_CLIENT_API_URL when it is imported, so every client run
happens in its own subprocess against an emulator started as a real server.
Protocol details the client never exercises (chunked uploads, usage limits,
injected errors, tampered URLs) are checked in-process with a TestClient.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from emulator.accounts import account_name
from emulator.app import create_app
from emulator.config import EmulatorConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN_A = "demo-token"
TOKEN_B = "second-token"
ACCOUNT_A = account_name(TOKEN_A)
ACCOUNT_B = account_name(TOKEN_B)
STANDIN_MARK = "not TabPFN"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TABPFN_", "EMULATOR_"))}
    # The client may cache credentials under HOME; keep every run in its own.
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def start_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(**knobs: str) -> str:
        home = tmp_path_factory.mktemp("emulator")
        port = _free_port()
        env = _clean_env(home)
        env["EMULATOR_TOKENS"] = f"{TOKEN_A},{TOKEN_B}"
        env.update(knobs)
        log = (home / "emulator.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        # Generous: a loaded shared machine takes 15 s and more to import the stack.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"emulator exited: {(home / 'emulator.log').read_text()}")
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail("emulator did not answer GET / within 90 s")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def emulator_url(start_emulator: Any) -> str:
    return start_emulator()


@pytest.fixture(scope="module")
def async_emulator_url(start_emulator: Any) -> str:
    return start_emulator(EMULATOR_FORCE_ASYNC="true", EMULATOR_ASYNC_FIT_DELAY_S="0.5")


def run_client(
    url: str, script: str, home: Path, token: str | None = None, timeout: float = 120
) -> dict[str, Any]:
    """Run `script` with the real tabpfn-client pointed at `url`; return what it printed."""
    env = _clean_env(home)
    env["TABPFN_CLIENT_API_URL"] = url
    if token is not None:
        env["TABPFN_TOKEN"] = token
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"client script failed:\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT:")]
    assert lines, f"client script printed no RESULT line:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1].removeprefix("RESULT:"))


def calls(url: str) -> list[dict[str, Any]]:
    return httpx.get(url + "/_emulator/calls").json()


def reset(url: str) -> None:
    httpx.post(url + "/_emulator/reset").raise_for_status()


# Shared by the client scripts: a tiny mixed table with a text column and gaps.
DATA = """
import json
import numpy as np
import pandas as pd

num = np.arange(16, dtype=float)
num[3] = np.nan
X = pd.DataFrame({
    "num": num,
    "colour": ["red", "blue", None, "green"] * 4,
    "note": ["fine day", None, "rainy, cold", "windy"] * 4,
})
y = np.array(["low"] * 8 + ["high"] * 8)
X_test = pd.DataFrame({
    "num": [0.5, 14.5, np.nan],
    "colour": ["red", "purple", None],
    "note": ["fine day", None, "never seen"],
})
"""

ESTIMATOR_SCRIPT = (
    DATA
    + """
from tabpfn_client import TabPFNClassifier, TabPFNRegressor

clf = TabPFNClassifier().fit(X, y)
preds = clf.predict(X_test)
probas = clf.predict_proba(X_test)
out = {"clf": {
    "preds": preds.tolist(),
    "probas": probas.tolist(),
    "classes": clf.classes_.tolist(),
    "meta": clf._last_meta,
    "timings": clf.get_timings(),
}}

y_reg = np.arange(16, dtype=float) * 2.0
reg = TabPFNRegressor().fit(X, y_reg)
out["reg"] = {
    "mean": reg.predict(X_test).tolist(),
    "median": reg.predict(X_test, output_type="median").tolist(),
    "quantiles": [q.tolist() for q in reg.predict(X_test, output_type="quantiles")],
    "q3": [q.tolist() for q in reg.predict(
        X_test, output_type="quantiles", quantiles=[0.1, 0.5, 0.9])],
    "mode": reg.predict(X_test, output_type="mode").tolist(),
    "main_keys": sorted(reg.predict(X_test, output_type="main")),
    "full_keys": sorted(k for k in reg.predict(X_test, output_type="full") if k != "criterion"),
    "meta": reg._last_meta,
}
print("RESULT:" + json.dumps(out))
"""
)

ASYNC_SCRIPT = (
    DATA
    + """
from tabpfn_client import TabPFNClassifier
from tabpfn_client.client import ServiceClient

settings = ServiceClient.get_settings()
sync_clf = TabPFNClassifier(api_mode="sync").fit(X, y)
auto_clf = TabPFNClassifier(random_state=1).fit(X.iloc[::-1], y[::-1])
out = {
    "async_threshold": settings.async_settings.use_above_trainset_size_bytes,
    "sync_preds": sync_clf.predict(X_test).tolist(),
    "auto_preds": auto_clf.predict(X_test).tolist(),
    "sync_fit_timings": sync_clf.get_timings()["fit"],
    "auto_fit_timings": auto_clf.get_timings()["fit"],
}
print("RESULT:" + json.dumps(out))
"""
)

LOW_LEVEL_SCRIPT = """
import json
import numpy as np
import pandas as pd
from tabpfn_client.api_models import (
    ClassifierConfig, ClassifierFitTaskConfig, ClassifierPredictParams,
)
from tabpfn_client.client import ServiceClient
from tabpfn_client.errors import FittedModelNotFoundError
from tabpfn_client.models import ClientOptions

TOKENS = {"a": %(token_a)r, "b": %(token_b)r}

def opts(token):
    return ClientOptions(headers={"Authorization": f"Bearer {token}"})

preds_config = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="preds"))
out, models = {}, {}
for owner, offset in (("a", 0.0), ("b", 100.0)):
    X = pd.DataFrame({"x": np.arange(12.0) + offset, "c": ["p", "q"] * 6})
    y = np.array([0] * 6 + [1] * 6)
    fit = ServiceClient.fit_with_result(
        X, y, task_config=ClassifierFitTaskConfig(),
        tabpfn_systems=["preprocessing", "text"], client_options=opts(TOKENS[owner]),
    )
    pred = ServiceClient.predict(
        fit.fitted_train_set_id, X.iloc[[0, 11]], task_config=preds_config,
        client_options=opts(TOKENS[owner]),
    )
    models[owner] = fit.fitted_train_set_id
    out[owner] = {"timings": fit.timings, "preds": pred.y_pred.tolist(), "meta": pred.metadata}

try:
    ServiceClient.predict(
        models["b"], pd.DataFrame({"x": [1.0], "c": ["p"]}), task_config=preds_config,
        client_options=opts(TOKENS["a"]),
    )
    out["foreign_error"] = None
except FittedModelNotFoundError as exc:
    out["foreign_error"] = str(exc)

out["bad_token_accepted"] = ServiceClient.is_auth_token_outdated("not-a-real-token")
out["global_token"] = ServiceClient.get_access_token()
out["global_auth_header"] = ServiceClient.httpx_client.headers.get("Authorization")
print("RESULT:" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def estimator_run(emulator_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    reset(emulator_url)
    out = run_client(
        emulator_url, ESTIMATOR_SCRIPT, tmp_path_factory.mktemp("client"), token=TOKEN_A
    )
    out["calls"] = calls(emulator_url)
    return out


def test_classifier_string_labels_text_and_missing_values(estimator_run: dict[str, Any]) -> None:
    clf = estimator_run["clf"]
    assert clf["classes"] == ["high", "low"]
    assert clf["preds"][:2] == ["low", "high"]
    assert clf["preds"][2] in ("low", "high")
    assert len(clf["probas"]) == 3
    for row in clf["probas"]:
        assert len(row) == 2
        assert sum(row) == pytest.approx(1.0)
    # Columns follow the sorted classes: row 0 is "low", row 1 is "high".
    assert clf["probas"][0][1] > 0.5 and clf["probas"][1][0] > 0.5
    assert clf["meta"]["classes"] == ["high", "low"]
    assert clf["meta"]["test_set_num_rows"] == 3


def test_predictions_are_labelled_as_stand_in(estimator_run: dict[str, Any]) -> None:
    for meta in (estimator_run["clf"]["meta"], estimator_run["reg"]["meta"]):
        assert STANDIN_MARK in meta["package_version"]
        assert "emulator-standin" in meta["package_version"]


def test_timings_are_measured(estimator_run: dict[str, Any]) -> None:
    timings = estimator_run["clf"]["timings"]
    assert timings["fit"]["elapsed_s"] > 0
    assert timings["fit"]["fit_s"] > 0
    assert timings["predict"]["predict_s"] > 0


def test_regressor_mean_and_quantiles(estimator_run: dict[str, Any]) -> None:
    reg = estimator_run["reg"]
    assert len(reg["mean"]) == 3
    assert reg["mean"][0] < reg["mean"][1]
    assert all(0.0 <= v <= 30.0 for v in reg["mean"])
    assert len(reg["median"]) == 3
    # Default quantiles are tabpfn's 0.1 .. 0.9, one list per quantile.
    assert len(reg["quantiles"]) == 9
    assert all(len(q) == 3 for q in reg["quantiles"])
    for lower, upper in zip(reg["quantiles"], reg["quantiles"][1:], strict=False):
        assert all(a <= b for a, b in zip(lower, upper, strict=True))
    assert len(reg["q3"]) == 3
    assert reg["main_keys"] == ["mean", "median", "mode", "quantiles"]
    assert len(reg["mode"]) == 3
    assert {"borders", "logits"} <= set(reg["full_keys"])


def test_sync_fit_with_global_token_never_polls(estimator_run: dict[str, Any]) -> None:
    paths = [c["path"] for c in estimator_run["calls"]]
    assert "/tabpfn/fit" in paths
    assert "/tabpfn/get_fit_status" not in paths
    assert "/tabpfn/submit_fit_job" not in paths
    api_calls = [c for c in estimator_run["calls"] if not c["path"].startswith("/_storage/")]
    assert {c["account"] for c in api_calls} == {ACCOUNT_A}
    uploads = [c for c in estimator_run["calls"] if c["path"].startswith("/_storage/")]
    assert uploads
    # With a global token the client's shared httpx client sends it to storage too.
    assert all(u["account"] == ACCOUNT_A and u["auth_account"] == ACCOUNT_A for u in uploads)
    assert all(c["status"] in (200, 409) for c in estimator_run["calls"])


def test_forced_async_fit_polls_until_completed(async_emulator_url: str, tmp_path: Path) -> None:
    reset(async_emulator_url)
    out = run_client(async_emulator_url, ASYNC_SCRIPT, tmp_path, token=TOKEN_A)
    assert out["async_threshold"] == 0
    assert out["sync_preds"][:2] == ["low", "high"]
    assert out["auto_preds"][:2] == ["low", "high"]
    for timings in (out["sync_fit_timings"], out["auto_fit_timings"]):
        assert timings["elapsed_s"] >= 0.5

    paths = [c["path"] for c in calls(async_emulator_url)]
    fit_at = paths.index("/tabpfn/fit")
    submit_at = paths.index("/tabpfn/submit_fit_job")
    # A "pending" sync fit and a submitted job are each followed by status polls.
    assert "/tabpfn/get_fit_status" in paths[fit_at:submit_at]
    assert "/tabpfn/get_fit_status" in paths[submit_at:]


def _canonical(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Calls without ids; concurrent x/y uploads sorted, as their order is a race."""
    rows: list[tuple[Any, ...]] = []
    run: list[tuple[Any, ...]] = []
    for e in entries:
        row = (
            e["method"],
            UUID_RE.sub("*", e["path"]),
            e["status"],
            e["account"],
            e.get("auth_account", "-"),
        )
        if e["method"] == "PUT":
            run.append(row)
            continue
        rows.extend(sorted(run))
        run = []
        rows.append(row)
    return rows + sorted(run)


def test_low_level_client_per_request_tokens(emulator_url: str, tmp_path: Path) -> None:
    reset(emulator_url)
    script = LOW_LEVEL_SCRIPT % {"token_a": TOKEN_A, "token_b": TOKEN_B}
    out = run_client(emulator_url, script, tmp_path)

    assert out["global_token"] is None
    assert out["global_auth_header"] is None
    assert out["bad_token_accepted"] is False
    for owner in ("a", "b"):
        assert out[owner]["preds"] == [0, 1]
        assert STANDIN_MARK in out[owner]["meta"]["package_version"]
        assert out[owner]["timings"]["elapsed_s"] > 0
    assert out["foreign_error"] is not None
    assert "was not found on the server" in out["foreign_error"]

    log = calls(emulator_url)
    settings = [c for c in log if c["path"] == "/tabpfn/get_settings"]
    assert settings and all(c["account"] is None for c in settings)

    def owner_phase(acct: str) -> list[tuple[Any, ...]]:
        return [
            ("POST", "/tabpfn/prepare_train_set_upload", 200, acct, "-"),
            ("PUT", "/_storage/*/x_train/0", 200, acct, None),
            ("PUT", "/_storage/*/y_train/0", 200, acct, None),
            ("POST", "/tabpfn/fit", 200, acct, "-"),
            ("POST", "/tabpfn/prepare_test_set_upload", 200, acct, "-"),
            ("PUT", "/_storage/*/x_test/0", 200, acct, None),
            ("POST", "/tabpfn/predict", 200, acct, "-"),
        ]

    expected = [
        *owner_phase(ACCOUNT_A),
        *owner_phase(ACCOUNT_B),
        ("POST", "/tabpfn/prepare_test_set_upload", 404, ACCOUNT_A, "-"),
        ("GET", "/protected/", 401, None, "-"),
    ]
    assert _canonical([c for c in log if c["path"] != "/tabpfn/get_settings"]) == expected


def test_bad_or_missing_token_is_rejected(emulator_url: str) -> None:
    bad = httpx.get(emulator_url + "/protected/", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert "message" in bad.json()
    assert httpx.get(emulator_url + "/protected/").status_code == 401
    good = httpx.get(emulator_url + "/protected/", headers={"Authorization": f"Bearer {TOKEN_A}"})
    assert good.status_code == 200
    assert httpx.get(emulator_url + "/tabpfn/get_settings").status_code == 200
    assert httpx.get(emulator_url + "/retrieve_greeting_messages/").json() == {"messages": []}


# --- In-process protocol checks -------------------------------------------------


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _put(client: TestClient, info: dict[str, Any], data: bytes) -> None:
    """Split `data` over the signed URLs exactly as tabpfn-client does."""
    urls = info["signed_urls"]
    size = len(data) // len(urls)
    for i, url in enumerate(urls):
        end = (i + 1) * size if i < len(urls) - 1 else len(data)
        resp = client.put(url, content=data[i * size : end], headers=info["required_headers"])
        assert resp.status_code == 200, resp.text


TRAIN_X = pd.DataFrame({"x": [float(i) for i in range(12)], "t": ["a", "b", None] * 4})
TRAIN_Y = pd.DataFrame({"y": [0] * 6 + [1] * 6})
TEST_X = TRAIN_X.head(3)
CLASSIFIER = {"task": "classification"}


def _file_info(data: bytes, **extra: Any) -> dict[str, Any]:
    return {"format": "parquet", "size_bytes": len(data), **extra}


def _fit(client: TestClient, token: str, hashes: bool = False, chunks: bool = False) -> str:
    x, y = _parquet(TRAIN_X), _parquet(TRAIN_Y)
    extra: dict[str, Any] = {"use_chunks": True} if chunks else {}
    body = {
        "x_train_info": _file_info(x, **extra, **({"hash": "hx"} if hashes else {})),
        "y_train_info": _file_info(y, **extra, **({"hash": "hy"} if hashes else {})),
    }
    prep = client.post("/tabpfn/prepare_train_set_upload", json=body, headers=_auth(token))
    assert prep.status_code == 200, prep.text
    _put(client, prep.json()["x_train_info"], x)
    _put(client, prep.json()["y_train_info"], y)
    fit = client.post(
        "/tabpfn/fit",
        json={"train_set_upload_id": prep.json()["train_set_upload_id"], "task_config": CLASSIFIER},
        headers=_auth(token),
    )
    assert fit.status_code == 200, fit.text
    assert fit.json()["status"] == "completed"
    return fit.json()["fitted_train_set_id"]


def _predict(client: TestClient, token: str, model_id: str) -> httpx.Response:
    x = _parquet(TEST_X)
    prep = client.post(
        "/tabpfn/prepare_test_set_upload",
        json={"fitted_train_set_id": model_id, "x_test_info": _file_info(x)},
        headers=_auth(token),
    )
    assert prep.status_code == 200, prep.text
    _put(client, prep.json()["x_test_info"], x)
    return client.post(
        "/tabpfn/predict",
        json={
            "test_set_upload_id": prep.json()["test_set_upload_id"],
            "fitted_train_set_id": model_id,
            "task_config": {**CLASSIFIER, "predict_params": {"output_type": "probas"}},
        },
        headers=_auth(token),
    )


def _prepare_upload(client: TestClient, x: bytes) -> dict[str, Any]:
    """Token A's prepared train-set upload of `x` (as features and as target)."""
    body = {"x_train_info": _file_info(x), "y_train_info": _file_info(x)}
    return client.post("/tabpfn/prepare_train_set_upload", json=body, headers=_auth(TOKEN_A)).json()


def _client(**knobs: Any) -> TestClient:
    return TestClient(create_app(EmulatorConfig(tokens=[TOKEN_A, TOKEN_B], **knobs)))


def test_account_name_is_a_token_hash_and_tokens_never_leak() -> None:
    assert hashlib.sha256(TOKEN_A.encode()).hexdigest()[:12] == ACCOUNT_A
    client = _client()
    _fit(client, TOKEN_A)
    log = client.get("/_emulator/calls").text
    assert ACCOUNT_A in log
    assert TOKEN_A not in log
    assert "sig=" not in log


def test_chunked_upload_round_trip() -> None:
    client = _client(upload_chunk_bytes=256)
    model_id = _fit(client, TOKEN_A, chunks=True)
    puts = [c for c in client.get("/_emulator/calls").json() if c["method"] == "PUT"]
    assert len(puts) > 2
    resp = _predict(client, TOKEN_A, model_id)
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"]["classes"] == [0, 1]


def test_incomplete_upload_cannot_be_fitted() -> None:
    client = _client()
    x = _parquet(TRAIN_X)
    prep = _prepare_upload(client, x)
    _put(client, prep["x_train_info"], x)
    fit = client.post(
        "/tabpfn/fit",
        json={"train_set_upload_id": prep["train_set_upload_id"], "task_config": CLASSIFIER},
        headers=_auth(TOKEN_A),
    )
    assert fit.status_code == 400
    assert "incomplete" in fit.json()["message"]


def test_duplicate_train_set_is_per_account() -> None:
    client = _client()
    _fit(client, TOKEN_A, hashes=True)
    body = {
        "x_train_info": {"format": "parquet", "hash": "hx"},
        "y_train_info": {"format": "parquet", "hash": "hy"},
    }
    again = client.post("/tabpfn/prepare_train_set_upload", json=body, headers=_auth(TOKEN_A))
    assert again.status_code == 409
    assert again.json()["error_code"] == "DUPLICATE_TRAIN_SET_UPLOAD"
    other = client.post("/tabpfn/prepare_train_set_upload", json=body, headers=_auth(TOKEN_B))
    assert other.status_code == 200


def test_models_are_invisible_to_other_accounts() -> None:
    client = _client()
    model_id = _fit(client, TOKEN_A)
    status = client.post(
        "/tabpfn/get_fit_status", json={"fitted_train_set_id": model_id}, headers=_auth(TOKEN_B)
    )
    assert status.status_code == 404
    assert status.json()["error_code"] == "NOT_FOUND"
    own = client.post(
        "/tabpfn/get_fit_status", json={"fitted_train_set_id": model_id}, headers=_auth(TOKEN_A)
    )
    assert own.json()["status"] == "completed"


def test_tampered_signed_url_is_refused() -> None:
    client = _client()
    x = _parquet(TRAIN_X)
    prep = _prepare_upload(client, x)
    url = prep["x_train_info"]["signed_urls"][0]
    headers = prep["x_train_info"]["required_headers"]
    forged = url.replace(f"account={ACCOUNT_A}", f"account={ACCOUNT_B}")
    assert client.put(forged, content=x, headers=headers).status_code == 403
    bad_sig = re.sub(r"sig=[0-9a-f]+", "sig=" + "0" * 64, url)
    assert client.put(bad_sig, content=x, headers=headers).status_code == 403
    refused = [c for c in client.get("/_emulator/calls").json() if c["method"] == "PUT"]
    assert [c["account"] for c in refused] == [None, None]


def test_usage_limit_answers_429_with_reset_time() -> None:
    client = _client(usage_limit=1)
    model_id = _fit(client, TOKEN_A)
    assert _predict(client, TOKEN_A, model_id).status_code == 200
    second = _predict(client, TOKEN_A, model_id)
    assert second.status_code == 429
    assert second.json()["reset_time"]
    assert "resets at" in second.json()["message"]
    usage = client.post("/get_api_usage/", headers=_auth(TOKEN_A)).json()
    assert usage["current_usage"] == 1
    assert usage["usage_limit"] == 1
    assert usage["reset_time"]
    assert client.post("/get_api_usage/", headers=_auth(TOKEN_B)).json()["current_usage"] == 0


def test_error_rate_answers_503_on_work_calls_only() -> None:
    client = _client(error_rate=1.0)
    prep = client.post(
        "/tabpfn/prepare_train_set_upload",
        json={"x_train_info": {"format": "parquet"}, "y_train_info": {"format": "parquet"}},
        headers=_auth(TOKEN_A),
    )
    assert prep.status_code == 503
    assert "message" in prep.json()
    assert client.get("/tabpfn/get_settings").status_code == 200
    assert client.get("/protected/", headers=_auth(TOKEN_A)).status_code == 200


def test_knobs_change_at_runtime_revoke_hang_and_rows() -> None:
    client = _client()
    model_id = _fit(client, TOKEN_A)
    patched = client.patch(
        "/_emulator/config", json={"revoked_tokens": [TOKEN_A], "hang_s": 0.3, "max_rows": 7}
    )
    assert patched.status_code == 200, patched.text
    assert "revoked_tokens" not in patched.json()  # tokens never echo back
    assert client.get("/protected/", headers=_auth(TOKEN_A)).status_code == 401
    assert client.get("/protected/", headers=_auth(TOKEN_B)).status_code == 200
    limits = client.get("/tabpfn/get_settings").json()["max_model_limit"]
    assert limits["train_set_max_rows"] == limits["test_set_max_rows"] == 7
    client.patch("/_emulator/config", json={"revoked_tokens": []})
    started = time.perf_counter()
    assert _predict(client, TOKEN_A, model_id).status_code == 200
    assert time.perf_counter() - started >= 0.3  # the predict call stalled
    assert client.patch("/_emulator/config", json={"tokens": ["x"]}).status_code == 422
    assert client.patch("/_emulator/config", json={"error_rate": 2}).status_code == 422


def test_lowering_the_hang_releases_calls_already_hanging(emulator_url: str) -> None:
    """Calls stalled by EMULATOR_HANG_S end when the knob goes back to 0: a test that
    hung the upstream for minutes no longer holds the emulator's shutdown that long
    (uvicorn waits for running requests before it exits)."""
    config = emulator_url + "/_emulator/config"
    answered: list[float] = []

    def hung_call() -> None:
        httpx.post(emulator_url + "/tabpfn/predict", json={}, headers=_auth(TOKEN_A), timeout=120)
        answered.append(time.monotonic())

    httpx.patch(config, json={"hang_s": 90}).raise_for_status()
    thread = threading.Thread(target=hung_call, daemon=True)
    try:
        thread.start()
        time.sleep(1.0)
        assert not answered, "the call did not hang"
        released = time.monotonic()
        httpx.patch(config, json={"hang_s": 0}).raise_for_status()
        thread.join(timeout=10)
    finally:
        httpx.patch(config, json={"hang_s": 0})
    assert answered, "the hung call was not released"
    assert answered[0] - released < 2.0, answered[0] - released


def test_delete_dataset_forgets_the_model() -> None:
    client = _client()
    model_id = _fit(client, TOKEN_A)
    foreign = client.delete(
        "/delete_dataset/", params={"dataset_uid": model_id}, headers=_auth(TOKEN_B)
    )
    assert foreign.status_code == 404
    deleted = client.delete(
        "/delete_dataset/", params={"dataset_uid": model_id}, headers=_auth(TOKEN_A)
    )
    assert deleted.status_code == 200
    assert model_id in deleted.json()["deleted_dataset_uids"]
    x = _parquet(TEST_X)
    prep = client.post(
        "/tabpfn/prepare_test_set_upload",
        json={"fitted_train_set_id": model_id, "x_test_info": _file_info(x)},
        headers=_auth(TOKEN_A),
    )
    assert prep.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/protected/"),
        ("POST", "/tabpfn/prepare_train_set_upload"),
        ("POST", "/tabpfn/fit"),
        ("POST", "/tabpfn/submit_fit_job"),
        ("POST", "/tabpfn/get_fit_status"),
        ("POST", "/tabpfn/prepare_test_set_upload"),
        ("POST", "/tabpfn/predict"),
        ("POST", "/get_api_usage/"),
        ("POST", "/tabpfn/estimate_cost"),
    ],
)
def test_authenticated_endpoints_need_a_known_token(method: str, path: str) -> None:
    client = _client()
    for headers in ({}, _auth("unknown-token")):
        resp = client.request(method, path, json={}, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["message"]
