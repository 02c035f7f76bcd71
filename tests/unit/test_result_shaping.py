"""A job's result as the user sees it, from what the upstream answered: the
JSON shape (`_predict` in worker/runner.py) and the table form of
GET /jobs/{id}/result (`result_table` in shared/tables/table_files.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from shared.jobs import states as js
from shared.models import FittedModel
from shared.tables.table_files import result_table
from shared.upstream.fit_predict import Prediction, as_list
from worker.runner import _predict

X = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
TIMINGS = {"predict_s": 0.5}


class Upstream:
    """Answers predict() with fixed values and remembers what it was asked."""

    def __init__(self, values) -> None:
        self.values, self.calls = values, []

    def predict(self, **call) -> Prediction:
        self.calls.append(call)
        return Prediction(self.values, TIMINGS, {})


def _model(task: str, classes: list | None = None) -> FittedModel:
    return FittedModel(task=task, upstream_model_id="up-1", options={"n": 1}, classes=classes)


def test_labels_come_back_in_the_users_type_with_the_classes():
    # Through JSON the upstream turns integer labels into floats.
    upstream = Upstream(np.array([1.0, 0.0, 1.0]))
    result, timings = _predict(upstream, _model(js.CLASSIFICATION, [0, 1]), X, {"output": "labels"})
    assert result == {"predictions": [1, 0, 1], "classes": [0, 1]}
    assert all(type(p) is int for p in result["predictions"])
    assert timings == TIMINGS
    assert upstream.calls[0]["output_type"] == "preds"
    assert upstream.calls[0]["upstream_model_id"] == "up-1"


def test_probabilities_name_the_most_likely_class_with_columns_in_class_order():
    upstream = Upstream(np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]))
    model = _model(js.CLASSIFICATION, ["no", "yes"])
    result, _ = _predict(upstream, model, X, {"output": "probabilities"})
    assert result == {
        "predictions": ["no", "yes", "yes"],
        "probabilities": [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]],
        "classes": ["no", "yes"],
    }
    assert upstream.calls[0]["output_type"] == "probas"


def test_quantiles_are_keyed_by_their_value_and_the_median_is_the_prediction():
    # One row of values per quantile, as the upstream sends them.
    per_quantile = np.array([[1.0, 2.0, 3.0], [1.5, 2.5, 3.5], [2.0, 3.0, 4.0]])
    upstream = Upstream(per_quantile)
    params = {"output": "quantiles", "quantiles": [0.1, 0.5, 0.9]}
    result, _ = _predict(upstream, _model(js.REGRESSION), X, params)
    assert result == {
        "predictions": [1.5, 2.5, 3.5],
        "quantiles": {"0.1": [1.0, 2.0, 3.0], "0.5": [1.5, 2.5, 3.5], "0.9": [2.0, 3.0, 4.0]},
    }
    assert upstream.calls[0]["quantiles"] == [0.1, 0.5, 0.9]


def test_without_the_median_asked_for_it_is_asked_for_too_and_is_the_prediction():
    """Before, the middle quantile asked for was the prediction: of [0.05, 0.95], the
    upper one, which the CLI and the console then scored as the prediction."""
    upstream = Upstream(np.array([[1.0], [3.0], [2.0]]))  # 0.05, 0.95, then the median
    params = {"output": "quantiles", "quantiles": [0.05, 0.95]}
    result, _ = _predict(upstream, _model(js.REGRESSION), X.head(1), params)
    assert upstream.calls[0]["quantiles"] == [0.05, 0.95, 0.5]
    assert result == {"predictions": [2.0], "quantiles": {"0.05": [1.0], "0.95": [3.0]}}


def test_a_regression_mean_turns_nan_into_null():
    upstream = Upstream(np.array([1.5, math.nan, 2.5]))
    result, _ = _predict(upstream, _model(js.REGRESSION), X, {"output": "mean"})
    assert result == {"predictions": [1.5, None, 2.5]}
    assert upstream.calls[0]["output_type"] == "mean"


def test_as_list_makes_nested_plain_lists_without_nan():
    assert as_list(np.array([[1.0, math.nan], [math.nan, 2.0]])) == [[1.0, None], [None, 2.0]]
    assert as_list([np.int64(3)]) == [3]


def test_a_prediction_table_has_one_row_per_input_row_and_a_column_per_class():
    table = result_table(
        {
            "predictions": ["no", "yes"],
            "probabilities": [[0.9, 0.1], [0.2, 0.8]],
            "classes": ["no", "yes"],
        }
    )
    expected = pd.DataFrame(
        {"prediction": ["no", "yes"], "proba_no": [0.9, 0.2], "proba_yes": [0.1, 0.8]}
    )
    pd.testing.assert_frame_equal(table, expected)


def test_a_quantile_table_has_a_column_per_quantile():
    table = result_table(
        {"predictions": [1.5, 2.5], "quantiles": {"0.1": [1.0, 2.0], "0.9": [2.0, 3.0]}}
    )
    assert list(table.columns) == ["prediction", "q_0.1", "q_0.9"]
    assert table["q_0.9"].tolist() == [2.0, 3.0]


def test_quantile_columns_are_in_the_quantiles_order_whatever_the_stored_order():
    # As PostgreSQL's JSONB gives the object back: shorter keys first.
    stored = {"0.1": [1.0], "0.5": [2.0], "0.9": [3.0], "0.05": [0.5], "0.95": [3.5]}
    table = result_table({"predictions": [2.0], "quantiles": stored})
    assert list(table.columns) == ["prediction", "q_0.05", "q_0.1", "q_0.5", "q_0.9", "q_0.95"]
    assert table.iloc[0].tolist() == [2.0, 0.5, 1.0, 2.0, 3.0, 3.5]


def test_a_fit_result_is_one_row_with_lists_as_json_text():
    table = result_table(
        {"model_id": "m-1", "task": "classification", "n_rows": 10, "classes": ["a", "b"]}
    )
    assert table.to_dict("records") == [
        {"model_id": "m-1", "task": "classification", "n_rows": 10, "classes": '["a", "b"]'}
    ]
    assert json.loads(table["classes"][0]) == ["a", "b"]
