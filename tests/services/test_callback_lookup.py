"""A submit's callback host that resolves slowly or never: the submit holds no pooled
database connection while it waits, and gives up after CALLBACK_LOOKUP_TIMEOUT_S."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from sqlalchemy import func, select

from shared.core.db import get_engine, session_scope
from shared.core.errors import CallbackUrlUnresolvable
from shared.jobs import states as js
from shared.jobs import submit
from shared.models import Job, User
from shared.webhooks import targets
from tests.support.factories import make_user
from tests.support.inprocess import configured


def test_a_silent_nameserver_holds_no_connection_and_is_given_up(services, monkeypatch):
    with configured(services, WEBHOOK_ALLOW_PRIVATE_TARGETS="false"):
        with session_scope() as session:
            user = make_user(session=session)
        held_during_lookup: list[int] = []
        never = threading.Event()

        def silent(host, port, *args, **kwargs):
            if host != "hook.example":
                return socket.getaddrinfo(host, port, *args, **kwargs)
            held_during_lookup.append(get_engine().pool.checkedout())
            never.wait(30)  # a nameserver that never answers
            raise socket.gaierror("timed out")

        monkeypatch.setattr(targets.socket, "getaddrinfo", silent)
        monkeypatch.setattr(submit, "CALLBACK_LOOKUP_TIMEOUT_S", 0.5)
        started = time.monotonic()
        try:
            unresolvable = pytest.raises(CallbackUrlUnresolvable, match="within 0.5 s")
            with unresolvable, session_scope() as session:
                caller = session.get(User, user.id)  # the request's session, in use
                submit.create_fit_job(
                    session=session,
                    user=caller,
                    task=js.CLASSIFICATION,
                    train=submit.JsonTable(X=[[1.0], [2.0]], y=[0, 1]),
                    options={},
                    callback_url="https://hook.example/events",
                )
        finally:
            never.set()
        assert time.monotonic() - started < 5
        assert held_during_lookup == [0], "the submit held a pooled connection while it waited"
        with session_scope() as session:
            assert session.scalar(select(func.count()).select_from(Job)) == 0
