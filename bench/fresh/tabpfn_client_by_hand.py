"""One fit-predict with tabpfn-client, as a user's script makes it: a fresh process.

argv: TOKEN BODY.json [BODY.json ...] (the service's fit-predict body, so both
sides read the same file). Prints one JSON line: time.time() at the start, after
the imports and after each job, so the caller can split the cold start from
the jobs (the same clock as the caller's).
"""

import sys
import time

started = time.time()
import numpy as np  # noqa: E402  (the imports are what is measured)
from tabpfn_client import TabPFNClassifier, set_access_token  # noqa: E402
from user_data import run_jobs  # noqa: E402  (this directory: the script's own)

imported = time.time()


def fit_predict(X, y, X_test) -> int:
    model = TabPFNClassifier()
    model.fit(X, np.asarray(y))
    return len(model.predict_proba(X_test))


set_access_token(sys.argv[1])
run_jobs(started, imported, sys.argv[2:], fit_predict)
