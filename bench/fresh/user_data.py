"""What both scripts here share: the user's table read from a fit-predict body file,
and the JSON line they print. Imported after each script's clock starts."""

import json
import time
from pathlib import Path

import pandas as pd


def read_tables(path: str) -> tuple[pd.DataFrame, list, pd.DataFrame]:
    """(X, y, X_test) from a JSON file shaped as POST /jobs/fit-predict's body."""
    body = json.loads(Path(path).read_text(encoding="utf-8"))
    train, test = body["train"], body["test"]
    X = pd.DataFrame(train["X"], columns=train["columns"])
    return X, train["y"], pd.DataFrame(test["X"], columns=test["columns"])


def run_jobs(started: float, imported: float, paths: list[str], fit_predict) -> None:
    """Each path's fit-predict in turn; prints the times and each result's row count."""
    ends, rows = [], []
    for path in paths:
        rows.append(fit_predict(*read_tables(path)))
        ends.append(time.time())
    print(json.dumps({"started": started, "imported": imported, "ends": ends, "rows": rows}))
