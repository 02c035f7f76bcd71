"""The text cleaning before upload (shared/upstream/fit_predict.py, `_clean`).

tabpfn-client's estimators clean text columns before they upload a table. The
worker does the same, and skips the cleaning for a table of numeric columns
alone, which the cleaning would copy and leave as it was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tabpfn_client.estimator import _clean_text_features

from shared.upstream.fit_predict import TabPFNUpstream


def _upstream() -> TabPFNUpstream:
    return TabPFNUpstream("a-token", deadline_s=60)


def test_a_numeric_table_is_sent_as_it_is_and_is_what_the_cleaning_would_send() -> None:
    X = pd.DataFrame(
        {
            "f": np.linspace(0, 1, 50),
            "i": np.arange(50),
            "b": np.arange(50) % 2 == 0,
            "n": [np.nan if k % 7 == 0 else float(k) for k in range(50)],
        }
    )
    cleaned = _upstream()._clean(X)
    assert cleaned is X  # no copy
    pd.testing.assert_frame_equal(cleaned, _clean_text_features(X))


def test_a_table_with_text_is_cleaned_as_the_estimators_clean_it() -> None:
    X = pd.DataFrame({"x": [1.0, 2.0, 3.0], "t": ["a, b", "  many   spaces ", "z" * 3000]})
    cleaned = _upstream()._clean(X)
    assert cleaned is not X
    pd.testing.assert_frame_equal(cleaned, _clean_text_features(X))
    assert list(cleaned["t"]) == ["a b", "many spaces", "z" * 2500]
    assert X["t"][0] == "a, b"  # the job's own table is left as it was
