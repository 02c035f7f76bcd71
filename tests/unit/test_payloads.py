"""The payload codec on its own: the numeric fast path and the general path agree,
and numbers are class labels only when TabPFN's classifier takes them as classes.

JSON rows of plain numbers skip the per-column checks (shared/tables/payloads.py,
`_numeric_matrix`); everything else takes the general path. Both must make
the same table, and anything the fast path declines must still be refused
with the general path's words.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.core.errors import NumberOutOfRange, ValidationFailed
from shared.jobs.states import CLASSIFICATION, REGRESSION
from shared.tables import payloads
from shared.tables.payloads import decode_table, encode_table, labels_from_json, table_from_json

NUMERIC_ROWS = [
    [[1.5, 2, None], [3, -4.25, 5], [None, 0, 3e38]],  # 3e38: within float32
    [[1, 2], [3, 4]],
    [[2**70, 0.5]],  # an integer beyond 64 bits: a float like any other number
]


def _general(X, columns=None):
    frame = payloads._frame_from_rows(X, columns, "train")
    return payloads.table_from_frame(frame, name="train.X")


@pytest.mark.parametrize("rows", NUMERIC_ROWS)
def test_numeric_rows_take_the_fast_path_and_match_the_general_one(rows):
    assert payloads._numeric_matrix(rows) is not None
    fast = table_from_json(rows, None, name="train")
    pd.testing.assert_frame_equal(fast, _general(rows))
    assert all(dtype == np.float64 for dtype in fast.dtypes)
    # And the stored form reads back the same.
    pd.testing.assert_frame_equal(decode_table(encode_table(fast).read()), fast)


@pytest.mark.parametrize(
    "rows",
    [
        [[1.0, "a"], [2.0, "b"]],  # text makes a text column
        [[1.0, True], [2.0, False]],  # booleans are numbers, but not plain ones
        [[None, None], [None, None]],  # no number at all
        [[1.0, [2.0]], [3.0, 4.0]],  # a nested list
        [[1.0, 2.0], [3.0]],  # uneven rows
        [[1.0, float("inf")]],  # infinity: refused, in the general path's words
        [[1.0, 7e300]],  # past float32's range (TabPFN's): refused the same way
    ],
)
def test_other_rows_take_the_general_path(rows):
    assert payloads._numeric_matrix(rows) is None
    try:
        expected = _general(rows)
    except ValidationFailed as exc:
        with pytest.raises(ValidationFailed) as raised:
            table_from_json(rows, None, name="train")
        assert str(raised.value) == str(exc)
    else:
        pd.testing.assert_frame_equal(table_from_json(rows, None, name="train"), expected)


def test_the_fast_path_checks_column_names_like_the_general_one():
    with pytest.raises(ValidationFailed, match="2 columns but the rows have 3 values"):
        table_from_json([[1.0, 2.0, 3.0]], ["a", "b"], name="train")
    with pytest.raises(ValidationFailed, match="must be unique"):
        table_from_json([[1.0, 2.0]], ["a", "a"], name="train")
    table = table_from_json([[1.0, 2.0]], ["width", "height"], name="train")
    assert list(table.columns) == ["width", "height"]


@pytest.mark.parametrize(
    ("y", "row"),
    [
        ([0.5, 1.5, 0.5, 1.5], 0),
        ([0, 1, 2.5], 2),  # integers and one fraction
        ([1.0, 1e30], 1),  # whole, but past int64: scikit-learn reads it as continuous
    ],
)
def test_numbers_that_are_not_whole_are_not_classes(y, row):
    # tabpfn-client refuses them locally; the upstream fails the fit ("Unknown label
    # type: continuous") after the job queued. Refused at submit, naming the row.
    with pytest.raises(
        ValidationFailed, match=rf"train\.y\[{row}\] is .*use task 'regression'"
    ) as e:
        labels_from_json(y, task=CLASSIFICATION, n_rows=len(y))
    assert e.value.extra == {"row": row}
    assert labels_from_json(y, task=REGRESSION, n_rows=len(y)).tolist() == y


def test_whole_numbers_written_as_floats_are_classes():
    assert labels_from_json([1.0, 2.0, 1.0], task=CLASSIFICATION, n_rows=3).tolist() == [1, 2, 1]
    assert labels_from_json([-3.0, 2**62, 0], task=CLASSIFICATION, n_rows=3).nunique() == 3


def test_an_integer_no_float_holds_is_out_of_range_like_1e400():
    # JSON allows 400 digits; float() overflows. The same code and row as 1e400.
    with pytest.raises(NumberOutOfRange, match=r"train\.y, row 1 is out of range \(1\.000e\+400\)"):
        labels_from_json([1, 10**400], task=REGRESSION, n_rows=2)
    with pytest.raises(NumberOutOfRange, match=r"column 'x0', row 2 is out of range \(-1"):
        table_from_json([[1, "a"], [2, "b"], [-(10**400), "c"]], None, name="train")


def test_a_column_fitted_as_text_stays_text_whatever_its_cells():
    """Numbers (and booleans) in a column the model knows as text are written as the
    fit writes the numbers of a text column: 101 is "101", not 101.0."""
    rows = [[101, 1.5, True], [None, 2.0, False], [202, None, None]]
    text = table_from_json(rows, ["code", "x", "flag"], name="test", text_columns={"code", "flag"})
    assert text["code"].tolist() == ["101", None, "202"]
    assert text["flag"].tolist() == ["True", "False", None]
    assert text["x"].dtype == "float64"
    # The same text a train column mixing numbers and words gives them.
    train = table_from_json([[101], ["A7"]], ["code"], name="train")
    assert train["code"].tolist() == ["101", "A7"]
    # Still checked as numbers first: past float32's range is refused as anywhere.
    with pytest.raises(NumberOutOfRange):
        table_from_json([[1e300]], ["code"], name="test", text_columns={"code"})
