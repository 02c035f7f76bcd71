"""One fit-predict through the service with its Python SDK, as a user's script: a fresh process.

argv: WAY API_URL API_KEY BODY.json [BODY.json ...], WAY one of
- `client`: `Client.fit_predict(..., wait=60)`, one job in one request;
- `estimator`: the scikit-learn `RemoteTabPFNClassifier`, a fit job then a
  predict job, each submit waiting for its job (docs/clients.md).
Prints the same JSON line as tabpfn_client_by_hand.py.
"""

import sys
import time

started = time.time()
from user_data import run_jobs  # noqa: E402  (pandas: the imports are what is measured)

way, api_url, api_key = sys.argv[1:4]
if way == "estimator":
    from tabpfn_api_client import RemoteTabPFNClassifier
else:
    from tabpfn_api_client import Client

imported = time.time()


def fit_predict(X, y, X_test) -> int:
    if way == "estimator":
        model = RemoteTabPFNClassifier(api_url, api_key)
        model.fit(X, y)
        return len(model.predict_proba(X_test))
    job = Client(api_url, api_key).fit_predict(X, y, X_test, output="probabilities", wait=60)
    return len(job.result()["probabilities"])


run_jobs(started, imported, sys.argv[4:], fit_predict)
