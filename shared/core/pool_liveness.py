"""Hand out only live pooled connections, without a round trip on the hot path.

SQLAlchemy's `pool_pre_ping` sends `SELECT 1` at every checkout: a round trip
before each transaction, several per job (the submit, the claim, the load, the
store, the result's read), each waiting on PostgreSQL and then on the GIL.

What a pre-ping catches is a connection that died while it sat in the pool.
When PostgreSQL restarts, or a backend is terminated, the server says so and
closes the socket (or the kernel does, when the backend process dies): the idle
socket turns readable. A pooled connection has read everything it asked for,
so a readable socket at checkout means the server spoke unasked, which is
that. `poll()` on it costs microseconds. Such a connection is dropped and the
pool opens a fresh one (SQLAlchemy retries a checkout that raises
`DisconnectionError`).

What the socket cannot show is a connection something between us and the
server dropped without telling either side (a NAT or firewall idle timeout):
those are found by a real ping, sent only when the connection has sat idle
longer than `IDLE_PING_S`. Hot connections, reused within seconds, never pay it.
"""

from __future__ import annotations

import select
import time
from typing import Any

from sqlalchemy import Engine, event, exc

# A connection idle longer than this is pinged before use (middleboxes drop idle
# flows after minutes; PostgreSQL restarts are caught at once by the socket check).
IDLE_PING_S = 30.0
_CHECKED_IN = "checked_in_at"


def install(engine: Engine) -> None:
    event.listen(engine, "checkin", _stamp)
    event.listen(engine, "checkout", _check)


def _stamp(dbapi_connection: Any, record: Any) -> None:
    record.info[_CHECKED_IN] = time.monotonic()


def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    if server_closed(dbapi_connection):
        raise exc.DisconnectionError("the server closed this pooled connection")
    idle_since = record.info.get(_CHECKED_IN)
    if idle_since is not None and time.monotonic() - idle_since > IDLE_PING_S:
        _ping(dbapi_connection)


def server_closed(dbapi_connection: Any) -> bool:
    """Whether the server has closed (or spoken on) this idle connection."""
    if getattr(dbapi_connection, "closed", 0):
        return True
    try:
        fd = dbapi_connection.fileno()
    except Exception:  # psycopg2 raises InterfaceError on a closed connection
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def _ping(dbapi_connection: Any) -> None:
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        # psycopg2 opened a transaction for the ping: end it, so the connection is
        # handed out as idle as it was checked in (autocommit can be set only then).
        dbapi_connection.rollback()
    except Exception as error:
        raise exc.DisconnectionError(f"ping failed ({type(error).__name__})") from error
