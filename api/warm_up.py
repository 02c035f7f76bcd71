"""One-time costs paid before the API process reports ready, not by its first users.

uvicorn binds its socket only after the lifespan start-up returns, so nothing
is served (not even /healthz) until this has run: the first `/auth/setup`
then costs what later ones do instead of seconds more. The first submit's
statements are compiled and Celery's first send is set up here too
(shared/jobs/warm_up.py, shared/queue.py): measured in-process with the key's
check cached, a fresh API's first fit-predict submit cost 91-98 ms of CPU,
39-50 ms with these steps, later ones 14-18 ms. What a first request still
pays is FastAPI's own per-route set-up, built at a route's first match.

Each step is best effort: a failure is logged and the request that needs the
thing pays for it (and reports the error) as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shared.accounts.security import warm_api_key_hasher
from shared.accounts.users import warm_up_queries
from shared.core.config import get_settings
from shared.core.db import open_pool
from shared.core.heap import freeze_start_up_heap
from shared.jobs.warm_up import warm_up_submit
from shared.queue import warm_up_broker
from shared.upstream.account import upstream_limits
from shared.upstream.client import load_client

log = logging.getLogger(__name__)
# An upstream that does not answer must not hold the API's start-up for long.
UPSTREAM_WAIT_S = 5.0


def _step(name: str, run: Callable[[], object]) -> None:
    try:
        run()
    except Exception as exc:  # the request that needs it will say what is wrong
        log.warning("warm-up: %s failed (%s); continuing", name, type(exc).__name__)


def warm_up() -> None:
    started = time.monotonic()
    # tabpfn-client and what it imports (pandas, pyarrow, sklearn): seconds, once.
    _step("loading tabpfn-client", load_client)
    # The upstream's published limits, cached; also opens the HTTP connection
    # that token checks reuse. In a thread so a silent upstream costs at most
    # UPSTREAM_WAIT_S of start-up.
    upstream = threading.Thread(
        target=_step, args=("upstream limits", upstream_limits), daemon=True
    )
    upstream.start()
    # bcrypt's backend and passlib's self-test run on first use.
    _step("API key hashing", warm_api_key_hasher)
    _step("database connection", warm_up_queries)
    # Concurrent first requests each need a connection: open the pool's now.
    _step("database pool", lambda: open_pool(get_settings().db_pool_size))
    # Celery's first send's setup: its configuration, router, producer pool, connection.
    _step("broker", warm_up_broker)
    upstream.join(UPSTREAM_WAIT_S)
    # A submit's statements compiled and its Parquet path run, rolled back. A submit
    # checks the table against the upstream's limits, so only once those are cached:
    # a silent upstream must not hold the start-up longer.
    if upstream.is_alive():
        log.warning("warm-up: job submit skipped (the upstream has not answered)")
    else:
        _step("job submit", warm_up_submit)
    frozen = freeze_start_up_heap()
    log.info(
        "warm-up done in %.1f s; %d objects left out of garbage collection",
        time.monotonic() - started,
        frozen,
    )
