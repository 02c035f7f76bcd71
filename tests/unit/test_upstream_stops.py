"""A run that is no longer wanted (canceled, past its deadline, taken over) stops at its
next chunk and in a budget wait: it went on sending a test set's chunks upstream,
spending the token's budget, and slept out an hour-window's wait in its slot."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from shared.upstream import fit_predict, pacing
from shared.upstream.fit_predict import TabPFNUpstream


class _Unwanted(Exception):
    pass


def _stopped_after(calls: int):
    made = []

    def check() -> None:
        made.append(1)
        if len(made) > calls:
            raise _Unwanted

    return check


def test_a_budget_wait_ends_when_the_run_is_no_longer_wanted(monkeypatch) -> None:
    later = datetime.now(UTC) + timedelta(seconds=60)
    monkeypatch.setattr(pacing, "reserve", lambda fingerprint, calls: later)
    upstream = TabPFNUpstream("tok", deadline_s=600, fingerprint="f", check=_stopped_after(2))
    started = time.monotonic()
    with pytest.raises(_Unwanted):
        upstream.pace({"predict": 1})
    assert time.monotonic() - started < 3  # not the window's 60 s


def test_no_chunk_is_sent_after_the_run_is_no_longer_wanted(monkeypatch) -> None:
    X = pd.DataFrame({"a": np.arange(10.0)})

    def pairs(table: pd.DataFrame) -> list[pd.DataFrame]:
        return [table.iloc[i : i + 2] for i in range(0, len(table), 2)]

    sent: list[int] = []

    def predict(model, chunk, **_):
        sent.append(len(chunk))
        return SimpleNamespace(y_pred=np.zeros(len(chunk)), timings=None, metadata=None)

    monkeypatch.setattr(fit_predict, "_chunks", pairs)
    upstream = TabPFNUpstream("tok", deadline_s=600, check=_stopped_after(1))
    client = SimpleNamespace(predict=predict)
    upstream._client = SimpleNamespace(api_models=upstream._client.api_models, ServiceClient=client)
    with pytest.raises(_Unwanted):
        upstream.predict(
            task="regression", upstream_model_id="m", X=X, output_type="mean", options={}
        )
    assert sent == [2, 2]  # the first two chunks; the run was unwanted before the third


def test_a_call_made_late_in_a_job_may_take_no_longer_than_the_job_has_left() -> None:
    upstream = TabPFNUpstream("tok", deadline_s=600)
    assert 599 < upstream._options_now().timeout <= 600
    upstream._deadline = time.monotonic() + 5  # the job's deadline is 5 s away
    assert 4 < upstream._options_now().timeout <= 5
    assert upstream._options_now().headers == {"Authorization": "Bearer tok"}
