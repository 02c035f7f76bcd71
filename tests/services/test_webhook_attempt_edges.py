"""Webhook attempts at their edges: a job deleted while its attempt is under way, and
a retry's message that arrives before its delivery is due (a node's clock ahead)."""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import delete, func, select

from shared.accounts.security import encrypt_secret
from shared.core.db import session_scope
from shared.jobs import states as js
from shared.models import Job, WebhookDelivery
from shared.webhooks.targets import Target
from tests.support.factories import make_job, make_user, new_delivery
from tests.support.inprocess import configured
from worker import webhooks


def _pending_delivery(due_in_s: float = 0.0) -> WebhookDelivery:
    with session_scope() as session:
        user = make_user(session=session)
        user.webhook_secret_encrypted = encrypt_secret("whsec_dGVzdA==")
        job = make_job(session=session, user=user, status=js.SUCCEEDED)
        delivery = new_delivery(job, next_attempt_at=func.now() + timedelta(seconds=due_in_s))
        session.add(delivery)
    return delivery


def test_a_job_deleted_during_its_attempt_is_no_failure(services, monkeypatch, caplog):
    """Nothing is sent, and nothing logged as a failure: it was a warning with a
    traceback, then another for a claim it had "outlived", a false alarm."""
    with configured(services):
        delivery = _pending_delivery()
        job = SimpleNamespace(id=delivery.job_id)
        posted = []

        def deleted_while_checked(url, **kwargs):
            # DELETE /jobs/{id} commits while the attempt resolves the receiver's host.
            with session_scope() as session:
                session.execute(delete(Job).where(Job.id == job.id))
            return Target("https", "hooks.example.com", 443, "/x", ["203.0.113.9"])

        monkeypatch.setattr(webhooks, "check_target", deleted_while_checked)
        monkeypatch.setattr(webhooks, "_post", lambda *args: posted.append(args))
        with caplog.at_level(logging.INFO, logger=webhooks.__name__):
            assert webhooks.deliver(delivery.id) is None
        assert posted == []
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert any("deleted meanwhile" in r.getMessage() for r in caplog.records)
        with session_scope() as session:
            assert session.scalar(select(WebhookDelivery.id)) is None  # went with its job


def test_a_retry_message_that_comes_early_is_sent_again_for_its_due_time(services, monkeypatch):
    """Timed by the sending node's clock, a retry's message reached a node whose clock
    runs ahead before the delivery was due on PostgreSQL's: it was dropped, and the
    retry waited for the sweep (QUEUED_TIMEOUT_S and more)."""
    with configured(services):
        real_deliver, attempted = webhooks.deliver, []
        monkeypatch.setattr(webhooks, "deliver", attempted.append)
        early = _pending_delivery(due_in_s=2.0)
        again_in = webhooks.deliver_when_free(early.id)
        assert again_in is not None and 1.0 < again_in <= 2.1, again_in
        assert attempted == []  # not tried before its time: sent again for it
        due = _pending_delivery(due_in_s=0.0)
        webhooks.deliver_when_free(due.id)
        assert attempted == [due.id]
        # Held by an attempt under way (its lease, 45 s): no message is added; the
        # claim finds it not due, and that attempt's outcome sends the next one.
        monkeypatch.setattr(webhooks, "deliver", real_deliver)
        leased = _pending_delivery(due_in_s=40.0)
        assert webhooks.deliver_when_free(leased.id) is None
        with session_scope() as session:
            assert session.get(WebhookDelivery, leased.id).attempts == 0
