"""One fit-predict through the service with its Python SDK, as a user's script: a fresh process.

argv: WAY API_URL API_KEY BODY.json [BODY.json ...], WAY one of
- `client`: `Client.fit_predict(..., wait=60)`, one job in one request;
- `estimator`: the scikit-learn `RemoteTabPFNClassifier`, a fit job then a
  predict job, each submit waiting for its job (docs/clients.md).
Prints the same JSON line as tabpfn_client_by_hand.py.
"""

import json
import sys
import time
from pathlib import Path

started = time.time()
import pandas as pd  # noqa: E402  (the imports are what is measured)

way, api_url, api_key = sys.argv[1:4]
if way == "estimator":
    from tabpfn_api_client import RemoteTabPFNClassifier
else:
    from tabpfn_api_client import Client

imported = time.time()


def fit_predict(path: str) -> int:
    body = json.loads(Path(path).read_text(encoding="utf-8"))
    train, test = body["train"], body["test"]
    X = pd.DataFrame(train["X"], columns=train["columns"])
    X_test = pd.DataFrame(test["X"], columns=test["columns"])
    if way == "estimator":
        model = RemoteTabPFNClassifier(api_url, api_key)
        model.fit(X, train["y"])
        return len(model.predict_proba(X_test))
    job = Client(api_url, api_key).fit_predict(
        X, train["y"], X_test, output="probabilities", wait=60
    )
    return len(job.result()["probabilities"])


ends, rows = [], []
for body_path in sys.argv[4:]:
    rows.append(fit_predict(body_path))
    ends.append(time.time())
print(json.dumps({"started": started, "imported": imported, "ends": ends, "rows": rows}))
