"""One-time costs paid before the API process reports ready, not by its first users.

uvicorn binds its socket only after the lifespan start-up returns, so nothing
is served (not even /healthz) until this has run: the first `/auth/setup`
then costs what later ones do instead of seconds more. Each step is best
effort: a failure is logged and the request that needs the thing pays for it
(and reports the error) as before.
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
    upstream.join(UPSTREAM_WAIT_S)
    log.info("warm-up done in %.1f s", time.monotonic() - started)
