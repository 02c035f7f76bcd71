"""`tabpfn-api dev` lets webhooks reach local receivers only on a stack others cannot
reach: on --host 0.0.0.0, with the emulator's public demo token, anyone could register
and have the worker post into the machine's network."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from cli import dev


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("127.0.0.1", "true"), ("::1", "true"), ("localhost", "true"),
     ("0.0.0.0", "false"), ("192.168.1.20", "false")],
)  # fmt: skip
def test_private_webhook_targets_only_on_a_stack_of_this_machine(
    host: str, allowed: str, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no project .env
    monkeypatch.delenv("WEBHOOK_ALLOW_PRIVATE_TARGETS", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:9/x")  # nothing embedded
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("SECRET_KEY", "k")
    with ExitStack() as cleanup:
        env, summary, _ = dev._environment(tmp_path, cleanup, host=host)
    assert env["WEBHOOK_ALLOW_PRIVATE_TARGETS"] == allowed
    assert ("public addresses only" in summary["Webhooks"]) == (allowed == "false")
