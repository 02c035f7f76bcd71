"""The emulator's rate windows, token pools, trivial model and stats.

In-process checks of the protocol (status, headers, bodies, knobs) first; then the
real tabpfn-client in a subprocess against a real emulator server, whose 429
`RuntimeError`s the classifier in shared/upstream/throttle.py must read right.
"""

from __future__ import annotations

import io
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from emulator import jobs
from emulator.accounts import FittedModel
from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.limits import model_limit
from emulator.token_pools import next_day, next_month, predict_cost
from shared.upstream.throttle import PoolExhausted, RateWindow, classify_429
from tests.e2e.test_emulator_contract import (
    ESTIMATOR_SCRIPT,
    REPO_ROOT,
    TOKEN_A,
    TOKEN_B,
    calls,
    reset,
    run_client,
    start_emulator,  # noqa: F401  (a fixture used by the tests below)
)

TRAIN_X = pd.DataFrame({"x": [float(i) for i in range(12)], "t": ["a", "b", None] * 4})
TRAIN_Y = pd.DataFrame({"y": [0] * 4 + [1] * 8})
TEST_X = TRAIN_X.head(3)
CLASSIFIER = {"task": "classification"}
# Cost of one predict of TEST_X on TRAIN_X: (12 + 3) rows x 2 columns x 8 = 240, so the floor.
PREDICT_COST = 5_000


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _client(**knobs: Any) -> TestClient:
    return TestClient(create_app(EmulatorConfig(tokens=[TOKEN_A, TOKEN_B], **knobs)))


def _upload(client: TestClient, info: dict[str, Any], data: bytes) -> None:
    [url] = info["signed_urls"]
    assert client.put(url, content=data, headers=info["required_headers"]).status_code == 200


def _prepare_train(client: TestClient, token: str = TOKEN_A) -> httpx.Response:
    body = {"x_train_info": {"format": "parquet"}, "y_train_info": {"format": "parquet"}}
    return client.post("/tabpfn/prepare_train_set_upload", json=body, headers=_auth(token))


def _fit(client: TestClient, token: str = TOKEN_A, y: pd.DataFrame = TRAIN_Y) -> httpx.Response:
    prep = _prepare_train(client, token)
    assert prep.status_code == 200, prep.text
    _upload(client, prep.json()["x_train_info"], _parquet(TRAIN_X))
    _upload(client, prep.json()["y_train_info"], _parquet(y))
    return client.post(
        "/tabpfn/fit",
        json={"train_set_upload_id": prep.json()["train_set_upload_id"], "task_config": CLASSIFIER},
        headers=_auth(token),
    )


def _model(client: TestClient, token: str = TOKEN_A) -> str:
    fit = _fit(client, token)
    assert fit.status_code == 200, fit.text
    return fit.json()["fitted_train_set_id"]


def _predict(
    client: TestClient, model_id: str, token: str = TOKEN_A, output_type: str = "probas"
) -> httpx.Response:
    x = _parquet(TEST_X)
    prep = client.post(
        "/tabpfn/prepare_test_set_upload",
        json={"fitted_train_set_id": model_id, "x_test_info": {"format": "parquet"}},
        headers=_auth(token),
    )
    assert prep.status_code == 200, prep.text
    _upload(client, prep.json()["x_test_info"], x)
    return client.post(
        "/tabpfn/predict",
        json={
            "test_set_upload_id": prep.json()["test_set_upload_id"],
            "fitted_train_set_id": model_id,
            "task_config": {**CLASSIFIER, "predict_params": {"output_type": output_type}},
        },
        headers=_auth(token),
    )


# --- Rate windows ------------------------------------------------------------------


def test_rate_windows_are_off_by_default() -> None:
    client = _client(fits_per_minute=1, uploads_per_minute=1)
    for _ in range(3):
        assert _fit(client).status_code == 200


def test_full_minute_window_answers_429_with_retry_after() -> None:
    client = _client(rate_limits=True, fits_per_minute=2)
    assert _fit(client).status_code == 200
    assert _fit(client).status_code == 200
    refused = _fit(client)
    assert refused.status_code == 429
    seconds = int(refused.headers["Retry-After"])
    assert 1 <= seconds <= 60
    assert refused.json() == {
        "message": f"Rate limit exceeded for fit requests: 2 per minute. "
        f"Retry after {seconds} seconds",
        "error_code": "RATE_LIMIT_EXCEEDED",
        "request_type": "fit",
        "window": "minute",
        "limit": 2,
        "retry_after": seconds,
    }
    # Another token's windows are its own.
    assert _fit(client, TOKEN_B).status_code == 200


def test_each_kind_has_its_own_windows() -> None:
    client = _client(rate_limits=True, uploads_per_minute=2, predictions_per_minute=1)
    model_id = _model(client)  # upload 1 of 2
    assert _predict(client, model_id).status_code == 200  # upload 2, predict 1
    refused = _prepare_train(client)
    assert refused.status_code == 429 and refused.json()["request_type"] == "upload"
    # The predict window is full too, on its own count.
    client.patch("/_emulator/config", json={"uploads_per_minute": 10})
    second = _predict(client, model_id)
    assert second.status_code == 429 and second.json()["request_type"] == "predict"


def test_hour_window_and_the_later_window_is_named() -> None:
    client = _client(rate_limits=True, fits_per_minute=1, fits_per_hour=1)
    assert _fit(client).status_code == 200
    refused = _fit(client)
    # Both windows are full; a retry must wait for the hour, so the hour is named.
    assert refused.json()["window"] == "hour"
    assert 3590 <= int(refused.headers["Retry-After"]) <= 3600


def test_window_reopens_after_retry_after_and_refusals_count_nothing() -> None:
    # A "minute" of 1.2 s: the test waits for the window to reopen.
    client = _client(rate_limits=True, uploads_per_minute=1, rate_window_scale=0.02)
    assert _prepare_train(client).status_code == 200
    refused = _prepare_train(client)
    assert refused.status_code == 429
    assert _prepare_train(client).status_code == 429
    time.sleep(int(refused.headers["Retry-After"]))
    assert _prepare_train(client).status_code == 200


def test_windows_open_at_the_first_request_or_on_the_clock() -> None:
    from emulator.rate_windows import RateWindows

    def admit(windows: RateWindows, now: float, on_the_clock: bool) -> str:
        limits = {"minute": 2, "hour": 100}
        full = windows.admit("acct", "fit", limits, 1.0, now, on_the_clock=on_the_clock)
        return "admitted" if full is None else f"refused {full.retry_after_s:g}"

    for on_the_clock, at_the_minute in ((False, "refused"), (True, "admitted")):
        windows = RateWindows()
        calls = [admit(windows, now, on_the_clock) for now in (119.0, 119.2, 119.5, 120.0)]
        assert calls[:2] == ["admitted", "admitted"]
        # A first-request window opened at 119.0 lasts to 179.0; a clock one ends at 120.0.
        assert calls[2] == ("refused 0.5" if on_the_clock else "refused 59.5")
        assert calls[3].split()[0] == at_the_minute


def test_get_fit_status_and_signed_uploads_are_not_rate_limited() -> None:
    client = _client(rate_limits=True, fits_per_minute=1, uploads_per_minute=1)
    model_id = _model(client)
    for _ in range(3):
        status = client.post(
            "/tabpfn/get_fit_status", json={"fitted_train_set_id": model_id}, headers=_auth(TOKEN_A)
        )
        assert status.status_code == 200


# --- Token pools -------------------------------------------------------------------


def test_predict_cost_follows_the_cloud_formula() -> None:
    assert predict_cost(12, 3, 2) == 5_000  # the floor
    assert predict_cost(1_000, 500, 10) == 1_500 * 10 * 8
    assert predict_cost(1_000, 500, 10, n_estimators=2) == 1_500 * 10 * 2


def test_reset_times() -> None:
    now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert next_day(now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_month(now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_month(datetime(2026, 1, 31, 12, tzinfo=UTC)) == datetime(2026, 2, 1, tzinfo=UTC)


def test_daily_pool_refuses_a_predict_that_does_not_fit() -> None:
    client = _client(token_pools=True, daily_tokens=2 * PREDICT_COST + 1)
    model_id = _model(client)
    assert _predict(client, model_id).status_code == 200
    assert _predict(client, model_id).status_code == 200
    refused = _predict(client, model_id)
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers
    body = refused.json()
    tomorrow = next_day(datetime.now(UTC)).isoformat()
    assert body["error_code"] == "TOKEN_POOL_EXHAUSTED"
    assert body["pool"] == "daily" and body["reset_time"] == tomorrow
    assert body["used"] == 2 * PREDICT_COST and body["cost"] == PREDICT_COST
    assert body["message"].startswith("Daily prediction token pool exhausted")
    assert body["message"].endswith(f"resets at {tomorrow}")
    usage = client.post("/get_api_usage/", headers=_auth(TOKEN_A)).json()
    assert usage["token_pools"]["daily"]["used"] == 2 * PREDICT_COST
    assert usage["token_pools"]["monthly"]["limit"] == 200_000_000
    # Fits cost no tokens; the other token's pools are untouched.
    assert _fit(client).status_code == 200
    assert _predict(client, _model(client, TOKEN_B), TOKEN_B).status_code == 200


def test_monthly_pool_is_named_when_it_is_the_short_one() -> None:
    client = _client(token_pools=True, monthly_tokens=PREDICT_COST, daily_tokens=PREDICT_COST)
    model_id = _model(client)
    assert _predict(client, model_id).status_code == 200
    body = _predict(client, model_id).json()
    assert body["pool"] == "monthly"
    assert body["reset_time"] == next_month(datetime.now(UTC)).isoformat()


def test_pools_are_off_by_default_and_usage_has_no_pools() -> None:
    client = _client(daily_tokens=1)
    model_id = _model(client)
    assert _predict(client, model_id).status_code == 200
    assert "token_pools" not in client.post("/get_api_usage/", headers=_auth(TOKEN_A)).json()


# --- Knobs -------------------------------------------------------------------------


def test_limit_knobs_change_at_runtime_and_are_validated() -> None:
    client = _client()
    model_id = _model(client)
    patched = client.patch(
        "/_emulator/config",
        json={"rate_limits": True, "predictions_per_minute": 1, "rate_window_scale": 0.5},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["predictions_per_minute"] == 1
    assert _predict(client, model_id).status_code == 200
    assert _predict(client, model_id).status_code == 429
    for bad in (
        {"fits_per_minute": 0},
        {"uploads_per_hour": -1},
        {"rate_window_scale": 0},
        {"daily_tokens": 0},
        {"model": "gpt"},
    ):
        assert client.patch("/_emulator/config", json=bad).status_code == 422, bad
    assert client.post("/_emulator/reset").status_code == 200
    model_id = _model(client)  # reset forgets the counts along with the models
    assert _predict(client, model_id).status_code == 200


def test_limit_knobs_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMULATOR_RATE_LIMITS", "true")
    monkeypatch.setenv("EMULATOR_FITS_PER_HOUR", "7")
    monkeypatch.setenv("EMULATOR_RATE_WINDOW_SCALE", "0.1")
    monkeypatch.setenv("EMULATOR_TOKEN_POOLS", "1")
    monkeypatch.setenv("EMULATOR_MONTHLY_TOKENS", "123")
    monkeypatch.setenv("EMULATOR_MODEL", "trivial")
    config = EmulatorConfig()
    assert config.rate_limits and config.fits_per_hour == 7 and config.rate_window_scale == 0.1
    assert config.token_pools and config.monthly_tokens == 123 and config.model == "trivial"
    assert config.rate_limits_of("upload") == {"minute": 120, "hour": 3_000}
    assert config.rate_limits_of("predict") == {"minute": 60, "hour": 1_500}
    monkeypatch.setenv("EMULATOR_FITS_PER_MINUTE", "0")
    with pytest.raises(ValueError, match="fits_per_minute"):
        EmulatorConfig()


# --- The trivial model and the stats -----------------------------------------------


def test_trivial_model_answers_class_frequencies_in_process() -> None:
    client = _client(model="trivial")
    model_id = _model(client)
    probas = _predict(client, model_id)
    assert probas.status_code == 200, probas.text
    body = probas.json()
    assert body["prediction"] == [[4 / 12, 8 / 12]] * 3
    assert body["metadata"]["classes"] == [0, 1]
    assert "trivial" in body["metadata"]["package_version"]
    assert "not TabPFN" in body["metadata"]["package_version"]
    assert _predict(client, model_id, output_type="preds").json()["prediction"] == [1, 1, 1]


def test_trivial_model_trains_in_the_background_for_async_fits() -> None:
    client = _client(model="trivial", force_async=True, async_fit_delay_s=0.1)
    fit = _fit(client)
    assert fit.json()["status"] == "pending"
    model_id = fit.json()["fitted_train_set_id"]
    deadline = time.monotonic() + 10
    status = "pending"
    while status == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
        status = client.post(
            "/tabpfn/get_fit_status", json={"fitted_train_set_id": model_id}, headers=_auth(TOKEN_A)
        ).json()["status"]
    assert status == "completed"
    assert _predict(client, model_id, output_type="preds").json()["prediction"] == [1, 1, 1]


def test_trivial_model_refuses_what_the_forest_refuses() -> None:
    client = _client(model="trivial", max_rows=5)
    too_many = _fit(client)
    assert too_many.status_code == 400
    assert "train rows (12)" in too_many.json()["message"]
    client = _client(model="trivial")
    gaps = _fit(client, y=pd.DataFrame({"y": [0.0, None] * 6}))
    assert gaps.status_code == 400 and "missing" in gaps.json()["message"]


def test_trivial_model_costs_a_fraction_of_the_forest() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2_000, 20)), columns=[f"c{i}" for i in range(20)])
    y = pd.DataFrame({"y": rng.integers(0, 3, size=2_000)})
    x_bytes, y_bytes = _parquet(X), _parquet(y)
    limit = model_limit(EmulatorConfig())

    def cpu_of(kind: str) -> float:
        model = FittedModel(
            id=uuid.uuid4(),
            upload_id=uuid.uuid4(),
            task="classification",
            submitted_at=0,
            ready_at=0,
        )
        started = time.process_time()
        jobs.train(model, x_bytes, y_bytes, None, limit, kind)
        assert model.error is None, model.error
        return time.process_time() - started

    forest, trivial = cpu_of("forest"), cpu_of("trivial")
    assert trivial * 10 < forest, (trivial, forest)


def test_stats_report_cpu_and_calls() -> None:
    client = _client(rate_limits=True, fits_per_minute=1)
    assert _fit(client).status_code == 200
    assert _fit(client).status_code == 429
    stats = client.get("/_emulator/stats").json()
    assert stats["cpu_s"] > 0 and stats["cpu_user_s"] > 0
    assert stats["calls"]["fit"] == 2 and stats["calls"]["upload"] == 2
    assert stats["calls"]["storage_put"] == 4
    assert stats["http_429"] == {"fit": 1}
    assert stats["model"] == "forest"
    client.post("/_emulator/reset")
    after = client.get("/_emulator/stats").json()
    assert after["calls"] == {} and after["cpu_s"] >= stats["cpu_s"]


# --- The real tabpfn-client against a real emulator --------------------------------

LIMITS_SCRIPT = """
import json, sys, time
sys.path.insert(0, %(repo)r)
import httpx
import numpy as np
import pandas as pd
from tabpfn_client.api_models import (
    ClassifierConfig, ClassifierFitTaskConfig, ClassifierPredictParams,
)
from tabpfn_client.client import ServiceClient
from tabpfn_client.models import ClientOptions
from shared.upstream.throttle import RateWindow, classify_429

URL = ServiceClient.base_url
A, B = %(token_a)r, %(token_b)r
X = pd.DataFrame({"x": np.arange(12.0), "c": ["p", "q"] * 6})
y = np.array([0] * 6 + [1] * 6)
PREDS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="preds"))

DEFAULTS = httpx.get(URL + "/_emulator/config").json()

def knobs(**changes):
    httpx.post(URL + "/_emulator/reset").raise_for_status()
    httpx.patch(URL + "/_emulator/config", json={**DEFAULTS, **changes}).raise_for_status()

def opts(token):
    return ClientOptions(headers={"Authorization": f"Bearer {token}"})

def fit(token=A):
    return ServiceClient.fit_with_result(
        X, y, task_config=ClassifierFitTaskConfig(), tabpfn_systems=["preprocessing"],
        client_options=opts(token),
    ).fitted_train_set_id

def predict(model, token=A):
    return ServiceClient.predict(model, X.iloc[:2], task_config=PREDS, client_options=opts(token))

def refusal(call):
    try:
        call()
    except Exception as exc:
        return {"type": type(exc).__name__, "text": str(exc), "at": time.time()}
    return None

out = {}
knobs(rate_limits=True, fits_per_minute=2)
fit(); fit()
out["fit"] = refusal(fit)
out["fit_other_token"] = refusal(lambda: fit(B))

knobs(rate_limits=True, fits_per_minute=10, fits_per_hour=1)
fit()
out["fit_hour"] = refusal(fit)

knobs(rate_limits=True, predictions_per_minute=1)
model = fit(); predict(model)
out["predict"] = refusal(lambda: predict(model))

knobs(rate_limits=True, uploads_per_minute=1)
model = fit()
out["upload"] = refusal(lambda: predict(model))

# Wait as the classifier says, then run: the window has reopened. A "minute" of 3 s.
knobs(rate_limits=True, fits_per_minute=1, rate_window_scale=0.05)
fit()
first = refusal(fit)
verdict = classify_429(first["text"])
wait = (verdict.until.timestamp() - time.time()) if isinstance(verdict, RateWindow) else None
if wait is not None:
    time.sleep(max(wait, 0))
out["reopen"] = {"first": first, "waited": wait, "after": refusal(fit)}

knobs(token_pools=True, daily_tokens=6000)
model = fit(); predict(model)
out["daily"] = refusal(lambda: predict(model))
out["fit_after_daily"] = refusal(fit)

knobs(token_pools=True, monthly_tokens=6000)
model = fit(); predict(model)
out["monthly"] = refusal(lambda: predict(model))

knobs(usage_limit=1)
model = fit(); predict(model)
out["usage_limit"] = refusal(lambda: predict(model))
knobs()
print("RESULT:" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def limits_run(start_emulator: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    url = start_emulator()
    script = LIMITS_SCRIPT % {"repo": str(REPO_ROOT), "token_a": TOKEN_A, "token_b": TOKEN_B}
    # About 10 s on an idle machine; the margin is for a shared, loaded one.
    return run_client(url, script, tmp_path_factory.mktemp("limits"), timeout=400)


def _classified(refusal: dict[str, Any] | None) -> RateWindow | PoolExhausted:
    assert refusal is not None, "the call was not refused"
    assert refusal["type"] == "RuntimeError"
    assert "[HTTP 429]" in refusal["text"]
    return classify_429(refusal["text"], now=datetime.fromtimestamp(refusal["at"], UTC))


def _seconds(verdict: RateWindow | PoolExhausted, at: float) -> float:
    assert isinstance(verdict, RateWindow) and verdict.until is not None
    return verdict.until.timestamp() - at


@pytest.mark.parametrize(
    ("case", "method", "kind", "window", "max_s"),
    [
        ("fit", "fit", "fit", "minute", 60),
        ("fit_hour", "fit", "fit", "hour", 3600),
        ("predict", "predict", "predict", "minute", 60),
        ("upload", "prepare_test_set_upload", "upload", "minute", 60),
    ],
)
def test_real_client_rate_window_429s_classify_as_windows(
    limits_run: dict[str, Any], case: str, method: str, kind: str, window: str, max_s: int
) -> None:
    refusal = limits_run[case]
    assert refusal and refusal["text"].startswith(f"Fail to call {method}: [HTTP 429] ")
    verdict = _classified(refusal)
    assert isinstance(verdict, RateWindow)
    assert (verdict.kind, verdict.window) == (kind, window)
    assert 0 < _seconds(verdict, refusal["at"]) <= max_s + 0.01  # float rounding


def test_real_client_other_token_is_not_limited(limits_run: dict[str, Any]) -> None:
    assert limits_run["fit_other_token"] is None


def test_real_client_runs_again_once_the_classified_window_ends(
    limits_run: dict[str, Any],
) -> None:
    reopen = limits_run["reopen"]
    assert reopen["first"] is not None
    assert 0 < reopen["waited"] <= 3.5
    assert reopen["after"] is None


@pytest.mark.parametrize(("case", "pool"), [("daily", "daily"), ("monthly", "monthly")])
def test_real_client_pool_429s_classify_as_exhausted(
    limits_run: dict[str, Any], case: str, pool: str
) -> None:
    refusal = limits_run[case]
    verdict = _classified(refusal)
    at = datetime.fromtimestamp(refusal["at"], UTC)
    reset_at = (next_day(at) if pool == "daily" else next_month(at)).isoformat()
    assert verdict == PoolExhausted(pool=pool, reset_at=reset_at)


def test_real_client_usage_limit_classifies_as_daily(limits_run: dict[str, Any]) -> None:
    verdict = _classified(limits_run["usage_limit"])
    assert isinstance(verdict, PoolExhausted) and verdict.pool == "daily"
    assert verdict.reset_at and verdict.reset_at.endswith("T00:00:00+00:00")


def test_real_client_fits_despite_an_empty_pool(limits_run: dict[str, Any]) -> None:
    assert limits_run["fit_after_daily"] is None


def test_real_client_estimators_on_the_trivial_model(
    start_emulator: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = start_emulator(EMULATOR_MODEL="trivial")
    reset(url)
    out = run_client(url, ESTIMATOR_SCRIPT, tmp_path, token=TOKEN_A)
    clf, reg = out["clf"], out["reg"]
    # y is 8 "low" and 8 "high": a tie goes to the first class in sorted order.
    assert clf["classes"] == ["high", "low"]
    assert clf["preds"] == ["high"] * 3
    assert clf["probas"] == [[0.5, 0.5]] * 3
    assert "trivial" in clf["meta"]["package_version"]
    # y_reg is 0, 2, ..., 30: its mean, and one quantile per row, increasing.
    assert reg["mean"] == [15.0] * 3
    assert reg["median"] == [15.0] * 3
    assert len(reg["quantiles"]) == 9 and all(len(set(q)) == 1 for q in reg["quantiles"])
    assert [q[0] for q in reg["quantiles"]] == sorted(q[0] for q in reg["quantiles"])
    assert reg["q3"][0][0] == pytest.approx(np.quantile(np.arange(16) * 2.0, 0.1))
    assert {"borders", "logits"} <= set(reg["full_keys"])
    stats = httpx.get(url + "/_emulator/stats").json()
    assert stats["model"] == "trivial" and stats["cpu_s"] > 0
    predicts = [c for c in calls(url) if c["path"] == "/tabpfn/predict"]
    assert stats["calls"]["fit"] == 2 and stats["calls"]["predict"] == len(predicts) > 2
    assert all(c["status"] in (200, 409) for c in calls(url))
