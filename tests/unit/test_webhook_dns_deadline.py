"""A webhook attempt's DNS lookup is under the attempt's deadline (worker/webhooks.py,
shared/webhooks/targets.py): a resolver that hangs costs an attempt at most
WEBHOOK_TIMEOUT_S, is logged as that attempt's error, and is retried.

The resolver is replaced at its boundary (socket.getaddrinfo); the rest of the
attempt (the check, the deadline, the outcome and its retry) is the real code,
with the database reads and writes around it stood in for.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

from shared.core.config import get_settings
from shared.webhooks.events import PENDING
from shared.webhooks.targets import TargetUnresolvable, check_target
from worker import webhooks

TIMEOUT_S = 0.5
# How long the resolver hangs: far past the attempt's deadline, short enough that
# the code from before this fix (which waited for it) fails instead of hanging.
HANG_S = 6.0


@pytest.fixture
def hanging_resolver(monkeypatch):
    release = threading.Event()
    looked_up: list[str] = []

    def hang(host, port, *args, **kwargs):
        looked_up.append(host)
        release.wait(HANG_S)
        # TEST-NET-1: refused as not public, so no test ever connects anywhere.
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    monkeypatch.setenv("WEBHOOK_TIMEOUT_S", str(TIMEOUT_S))
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE_TARGETS", "false")
    get_settings.cache_clear()
    yield looked_up
    release.set()
    get_settings.cache_clear()


def test_a_lookup_past_its_timeout_is_given_up(hanging_resolver):
    started = time.monotonic()
    with pytest.raises(TargetUnresolvable, match="did not resolve within 0.3 s"):
        check_target("https://hooks.example.com/x", allow_private=False, timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert hanging_resolver == ["hooks.example.com"]


def test_a_lookup_that_answers_in_time_is_used():
    target = check_target("http://127.0.0.1:8080/x", allow_private=True, timeout=5)
    assert (target.addresses, target.port) == (["127.0.0.1"], 8080)


def test_a_hanging_resolver_costs_one_attempt_its_timeout_and_the_attempt_is_retried(
    hanging_resolver, monkeypatch
):
    delivery = SimpleNamespace(
        id=uuid.uuid4(),
        job_id=uuid.uuid4(),
        event_id="msg_1",
        url="https://hooks.example.com/x",
        payload="{}",
        attempts=1,
    )
    recorded = []

    def record(delivery, result, latency_ms, outcome, delay):
        recorded.append((result, latency_ms, outcome, delay))
        return True

    monkeypatch.setattr(webhooks, "_claim", lambda delivery_id: delivery)
    monkeypatch.setattr(webhooks, "_secret", lambda job_id: "whsec_" + "A" * 32)
    monkeypatch.setattr(webhooks, "_record", record)

    started = time.monotonic()
    retry_in = webhooks.deliver(delivery.id)
    elapsed = time.monotonic() - started

    # Held the slot for the attempt's timeout, not for as long as the resolver hung.
    assert elapsed < TIMEOUT_S + 1.0
    [(result, latency_ms, outcome, delay)] = recorded
    assert result.status_code is None
    assert result.error == "callback_url host 'hooks.example.com' did not resolve within 0.5 s."
    assert not result.final
    assert latency_ms < (TIMEOUT_S + 1.0) * 1000
    # A failed attempt like any other: pending, with the schedule's next delay.
    assert outcome == PENDING
    assert delay is not None and retry_in == delay
