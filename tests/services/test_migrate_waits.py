"""`migrate` waits for a database that is not up yet, and fails at once for one that
refuses it for good (cli/database_wait.py)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from cli.database_wait import wait_for_database
from cli.ports import free_port


def test_a_database_not_up_yet_is_waited_for_until_the_deadline() -> None:
    nobody = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x"
    started = time.monotonic()
    with pytest.raises(OperationalError, match="(?i)refused"):
        wait_for_database(nobody, timeout_s=1.5, every_s=0.25)
    assert 1.0 <= time.monotonic() - started < 5


def test_a_database_that_refuses_for_good_fails_at_once(services) -> None:
    wrong = make_url(services.admin_database_url).set(database="no_such_database_here")
    started = time.monotonic()
    with pytest.raises(OperationalError, match="does not exist"):
        wait_for_database(wrong.render_as_string(hide_password=False), timeout_s=30)
    assert time.monotonic() - started < 5


def test_a_database_that_is_up_returns_at_once(services) -> None:
    wait_for_database(services.admin_database_url, timeout_s=5)
