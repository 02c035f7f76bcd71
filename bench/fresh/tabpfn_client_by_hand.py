"""One fit-predict with tabpfn-client, as a user's script makes it: a fresh process.

argv: TOKEN BODY.json [BODY.json ...] (the service's fit-predict body, so both
sides read the same file). Prints one JSON line: time.time() at the start, after
the imports and after each job, so the caller can split the cold start from
the jobs (the same clock as the caller's).
"""

import json
import sys
import time
from pathlib import Path

started = time.time()
import numpy as np  # noqa: E402  (the imports are what is measured)
import pandas as pd  # noqa: E402
from tabpfn_client import TabPFNClassifier, set_access_token  # noqa: E402

imported = time.time()


def fit_predict(path: str) -> int:
    body = json.loads(Path(path).read_text(encoding="utf-8"))
    train, test = body["train"], body["test"]
    X = pd.DataFrame(train["X"], columns=train["columns"])
    X_test = pd.DataFrame(test["X"], columns=test["columns"])
    model = TabPFNClassifier()
    model.fit(X, np.asarray(train["y"]))
    return len(model.predict_proba(X_test))


set_access_token(sys.argv[1])
ends, rows = [], []
for body_path in sys.argv[2:]:
    rows.append(fit_predict(body_path))
    ends.append(time.time())
print(json.dumps({"started": started, "imported": imported, "ends": ends, "rows": rows}))
