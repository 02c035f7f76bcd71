"""A drain whose hand-back cannot reach PostgreSQL still exits the process.

It raised past os._exit: the process stayed, holding the hand-back's lock (a later
stop signal then hung on it), with its jobs marked lost and no leases beaten.
"""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from worker import lifecycle, runner


class _Exited(Exception):
    pass


def test_a_failed_hand_back_still_exits(monkeypatch, caplog) -> None:
    def unreachable() -> int:
        raise OperationalError("UPDATE jobs …", {}, Exception("server closed the connection"))

    codes: list[int] = []

    def exit_(code: int) -> None:
        codes.append(code)
        raise _Exited

    monkeypatch.setattr(runner, "hand_back_in_flight", unreachable)
    monkeypatch.setattr(lifecycle.os, "_exit", exit_)
    monkeypatch.setattr(lifecycle.logging, "shutdown", lambda: None)
    try:
        with pytest.raises(_Exited):
            lifecycle._hand_back_and_exit()
    finally:
        lifecycle._handing_back.release()
    assert codes == [0]
    assert any("hand-back failed (OperationalError)" in r.getMessage() for r in caplog.records)
