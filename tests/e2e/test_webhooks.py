"""Webhooks on completion, through the real stack, to a real receiver."""

from __future__ import annotations

import json
import re
import socket
import time
import zlib
from pathlib import Path

import httpx
import psutil
import pytest
from standardwebhooks.webhooks import Webhook

from shared.webhooks.targets import TargetRefused, check_target
from tests.support.api import wait_for_job
from tests.support.stacks import Stack, api_client, extra_api_url, own_stack
from tests.support.tokens import fresh_token
from tests.support.webhook_receiver import sender_gone, start_receiver

FIT = {
    "task": "classification",
    "train": {"X": [[float(i)] for i in range(8)], "y": ["a"] * 4 + ["b"] * 4},
}


@pytest.fixture
def receiver():
    receiver, server = start_receiver()
    yield receiver
    server.shutdown()


def _setup(api, token: str | None = None) -> tuple[dict, str]:
    # An account of the test's own: setup with a known token recovers its account.
    response = api.post("/auth/setup", json={"tabpfn_token": token or fresh_token()})
    body = response.json()
    return {"Authorization": f"Bearer {body['api_key']}"}, body["webhook_secret"]


def _submit(api, headers: dict, callback_url: str) -> str:
    response = api.post("/jobs/fit", json={**FIT, "callback_url": callback_url}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _deliveries(api, headers, job_id, until, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        deliveries = api.get(f"/jobs/{job_id}/webhooks", headers=headers).json()
        if until(deliveries):
            return deliveries
        assert time.monotonic() < deadline, deliveries
        time.sleep(0.1)


def test_failed_first_attempt_is_retried_signed_and_logged(api, receiver):
    headers, secret = _setup(api)
    receiver.script = [(500, {}), (204, {})]
    job = api.post("/jobs/fit", json={**FIT, "callback_url": receiver.url}, headers=headers)
    job_id = job.json()["id"]
    assert wait_for_job(api, headers, job_id)["status"] == "succeeded"

    first, second = receiver.wait_for(2)
    # The reference library verifies our signature (and rejects a wrong secret).
    event = Webhook(secret).verify(second.body, second.headers)
    assert event["type"] == "job.succeeded"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["timestamp"]), event
    assert event["data"]["job_id"] == job_id
    assert event["data"]["links"]["result"].endswith(f"/api/v1/jobs/{job_id}/result")
    assert "predictions" not in second.body.decode() and "train" not in event["data"]
    with pytest.raises(Exception):  # noqa: B017 - any verification error will do
        Webhook("whsec_" + "A" * 32).verify(second.body, second.headers)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    assert second.at - first.at >= 0.3  # a backoff, not a hot loop

    [delivery] = _deliveries(api, headers, job_id, lambda d: d and d[0]["status"] != "pending")
    assert delivery["status"] == "succeeded"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 204]
    assert delivery["attempts"][0]["error"] and delivery["attempts"][1]["error"] is None
    assert all(a["latency_ms"] >= 0 for a in delivery["attempts"])

    # Redelivery: the same event again, logged as a new delivery.
    again = api.post(f"/jobs/{job_id}/webhooks/redeliver", headers=headers)
    assert again.status_code == 202
    third = receiver.wait_for(3)[2]
    assert third.headers["webhook-id"] == first.headers["webhook-id"]
    assert Webhook(secret).verify(third.body, third.headers)["type"] == "job.succeeded"
    deliveries = _deliveries(api, headers, job_id, lambda d: len(d) == 2 and d[1]["attempts"])
    assert deliveries[1]["status"] == "succeeded"


def test_410_stops_retries_and_retry_after_is_honoured(api, receiver):
    headers, _ = _setup(api)
    receiver.script = [(503, {"Retry-After": "2"}), (410, {})]
    job_id = api.post(
        "/jobs/fit", json={**FIT, "callback_url": receiver.url}, headers=headers
    ).json()["id"]
    first, second = receiver.wait_for(2)
    assert second.at - first.at >= 1.8  # waited as asked, not the 0.5 s schedule
    [delivery] = _deliveries(api, headers, job_id, lambda d: d and d[0]["status"] != "pending")
    assert delivery["status"] == "failed"
    assert [a["status_code"] for a in delivery["attempts"]] == [503, 410]
    time.sleep(2.5)
    assert len(receiver.received) == 2  # no more after 410


def test_failed_and_canceled_jobs_send_their_events(api, receiver, emulator_knobs):
    token = fresh_token()
    headers, secret = _setup(api, token)
    emulator_knobs(revoked_tokens=[token])
    failed = api.post("/jobs/fit", json={**FIT, "callback_url": receiver.url}, headers=headers)
    wait_for_job(api, headers, failed.json()["id"])
    event = json.loads(receiver.wait_for(1)[0].body)
    assert event["type"] == "job.failed"
    assert event["data"]["error"]["code"] == "upstream_auth_failed"

    emulator_knobs(revoked_tokens=[], latency_s=1.0)
    queued = [
        api.post("/jobs/fit", json={**FIT, "callback_url": receiver.url}, headers=headers).json()[
            "id"
        ]
        for _ in range(3)
    ]
    assert api.post(f"/jobs/{queued[-1]}/cancel", headers=headers).status_code == 200
    events = {
        json.loads(r.body)["data"]["job_id"]: json.loads(r.body)["type"]
        for r in receiver.wait_for(4)
    }
    assert events[queued[-1]] == "job.canceled"


def test_the_webhook_secret_can_be_rotated(api, receiver):
    headers, old = _setup(api)
    new = api.post("/auth/webhook-secret", headers=headers).json()["webhook_secret"]
    assert new.startswith("whsec_") and new != old
    api.post("/jobs/fit", json={**FIT, "callback_url": receiver.url}, headers=headers)
    delivered = receiver.wait_for(1)[0]
    assert Webhook(new).verify(delivered.body, delivered.headers)["type"] == "job.succeeded"


@pytest.fixture(scope="module")
def public_only_api(stack, tmp_path_factory):
    """An API with the production default: private webhook targets refused."""
    yield from extra_api_url(
        stack, tmp_path_factory, "public", WEBHOOK_ALLOW_PRIVATE_TARGETS="false"
    )


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://localhost:8080/hook", "http://10.1.2.3/",
    "http://172.16.0.1/", "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/", "http://224.0.0.1/", "http://0.0.0.0/", "http://[::1]/",
    "http://[::ffff:127.0.0.1]/", "http://[fe80::1]/", "http://[fc00::1]/",
    # IPv6 forms that carry to a private IPv4 address (6to4, NAT64, Teredo), and site-local.
    "http://[2002:7f00:1::]/", "http://[2002:a00:1::]/", "http://[64:ff9b::7f00:1]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "http://[fec0::1]/",
])  # fmt: skip
def test_private_targets_are_refused_at_submit(api, public_only_api, url):
    headers, _ = _setup(api)
    response = httpx.post(
        f"{public_only_api}/jobs/fit", json={**FIT, "callback_url": url}, headers=headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "callback_url_forbidden"
    assert "not public" in response.json()["detail"]
    # The deployment's own addresses are not told to whoever asks.
    assert not re.search(r"\d+\.\d+\.\d+\.\d+|::", response.json()["detail"].split("'")[2])
    assert api.get("/jobs", headers=headers).json()["jobs"] == []


def test_a_callback_url_with_a_user_and_password_is_refused(api):
    """Accepted before, they were never sent: every attempt met the receiver's 401."""
    headers, _ = _setup(api)
    for url in ("https://user:secret@hooks.example.com/x", "https://user@hooks.example.com/x"):
        response = api.post("/jobs/fit", json={**FIT, "callback_url": url}, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "callback_url_forbidden"
        assert "user name or password" in response.json()["detail"]
        assert "secret" not in response.json()["detail"]
    assert api.get("/jobs", headers=headers).json()["jobs"] == []


def test_a_host_that_resolves_private_at_delivery_is_refused(monkeypatch):
    # DNS can change between submit and delivery: the check runs on what it says now.
    import socket

    def rebinding(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(TargetRefused, match="loopback"):
        check_target("https://hooks.example.com/x", allow_private=False)
    assert check_target("https://hooks.example.com/x", allow_private=True).addresses == [
        "127.0.0.1"
    ]


def test_a_callback_url_over_2048_characters_is_refused(api):
    headers, _ = _setup(api)
    # Accepted, a URL this long was never sent: httpx, which sent webhooks, refused it.
    url = "http://127.0.0.1:9/hooks?" + "a" * 70_000
    response = api.post("/jobs/fit", json={**FIT, "callback_url": url}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "callback_url_forbidden"
    assert "2048" in response.json()["detail"]
    # The same check runs at delivery, for rows written before it existed.
    with pytest.raises(TargetRefused, match="2048"):
        check_target("http://127.0.0.1/" + "a" * 2048, allow_private=True)
    check_target("http://127.0.0.1/" + "a" * 2000, allow_private=True)


# Receivers that misbehave. Whatever a receiver does, an attempt holds its worker
# slot for about WEBHOOK_TIMEOUT_S at most (3 s in the suite's stacks) and never
# reads the answer's body.

MB = 1024 * 1024


def _timeout_s(stack: Stack) -> float:
    return float(stack.env["WEBHOOK_TIMEOUT_S"])


def test_a_body_that_never_ends_is_not_waited_for(api, receiver):
    def trickle_body(handler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(240):  # a byte every 0.25 s for a minute, while the sender listens
            handler.wfile.write(b"1\r\nx\r\n")
            if sender_gone(handler, 0.25):
                return

    receiver.answer = trickle_body
    headers, _ = _setup(api)
    job_id = _submit(api, headers, receiver.url)
    # The status line said 200: that is the answer, and the connection is closed then.
    # (Reading the body, the worker held its slot for as long as the receiver went on.)
    [received] = receiver.wait_until_ended(1, timeout=40)
    assert received.ended - received.at < 20
    [delivery] = _deliveries(api, headers, job_id, lambda d: d and d[0]["status"] != "pending")
    assert delivery["status"] == "succeeded"
    assert [a["status_code"] for a in delivery["attempts"]] == [200]


def test_headers_that_never_end_are_cut_off_at_the_timeout_and_retried(api, receiver, stack):
    def trickle_headers(handler) -> None:
        # Every read gets a byte, so a timeout per read never fires: only a deadline does.
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(240):
            if sender_gone(handler, 0.25):
                return
            handler.wfile.write(b"z")

    receiver.answer = trickle_headers
    headers, _ = _setup(api)
    job_id = _submit(api, headers, receiver.url)
    first, second = receiver.wait_until_ended(2, timeout=40)
    timeout_ms = _timeout_s(stack) * 1000
    assert first.ended - first.at < _timeout_s(stack) + 10
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    [delivery] = _deliveries(api, headers, job_id, lambda d: d and len(d[0]["attempts"]) >= 2)
    for attempt in delivery["attempts"][:2]:
        assert attempt["status_code"] is None
        assert "did not answer within" in attempt["error"], attempt
        assert 0.9 * timeout_ms <= attempt["latency_ms"] < timeout_ms + 10_000


def test_a_huge_answer_is_not_read(api, receiver):
    body_mb, sent = 128, []

    def huge_body(handler) -> None:
        handler.wfile.write(f"HTTP/1.1 200 OK\r\nContent-Length: {body_mb * MB}\r\n\r\n".encode())
        chunk = b"x" * MB
        for _ in range(body_mb):  # until the sender hangs up (the write then fails)
            handler.wfile.write(chunk)
            sent.append(len(chunk))

    receiver.answer = huge_body
    headers, _ = _setup(api)
    job_id = _submit(api, headers, receiver.url)
    [received] = receiver.wait_until_ended(1)
    [delivery] = _deliveries(api, headers, job_id, lambda d: d and d[0]["status"] != "pending")
    assert [a["status_code"] for a in delivery["attempts"]] == [200]
    # What socket buffers take before the close, not the body (all of it, read before).
    assert sum(sent) < 32 * MB, f"{sum(sent) / MB:.0f} MiB sent"
    # Nor is any encoding asked for, which a receiver could inflate on our side.
    assert received.headers["Accept-Encoding"] == "identity"


def _gzip_of_zeros(megabytes: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    chunk = bytes(MB)
    return b"".join(packer.compress(chunk) for _ in range(megabytes)) + packer.flush()


def _peak_rss_mb(stack: Stack) -> float:
    """The worker processes' peak resident memory (VmHWM), summed."""
    node = psutil.Process(next(p.pid for p in stack.processes if p.name == "worker"))
    peak_kb = 0
    for process in [node, *node.children(recursive=True)]:
        status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
        peak_kb += int(next(line for line in status if line.startswith("VmHWM")).split()[1])
    return peak_kb / 1024


def test_a_gzip_bomb_is_not_inflated(api, receiver, stack):
    bomb = _gzip_of_zeros(300)
    assert len(bomb) < MB

    def gzip_bomb(handler) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n"
        handler.wfile.write(head.encode() + bomb)

    headers, _ = _setup(api)
    # A job first: whatever memory the worker's first jobs take is taken before we measure.
    wait_for_job(api, headers, _submit(api, headers, receiver.url))
    receiver.wait_for(1)
    before = _peak_rss_mb(stack)
    receiver.answer = gzip_bomb
    job_id = _submit(api, headers, receiver.url)
    [delivery] = _deliveries(api, headers, job_id, lambda d: d and d[0]["status"] != "pending")
    assert [a["status_code"] for a in delivery["attempts"]] == [200]
    # 300 MiB inflated (read whole, it grew a worker by as much); the jobs take a few.
    assert _peak_rss_mb(stack) - before < 100


def test_an_attempt_that_breaks_on_our_side_is_logged_and_retried_until_failed(
    api, receiver, stack, request
):
    response = api.post("/auth/setup", json={"tabpfn_token": fresh_token()})
    headers = {"Authorization": f"Bearer {response.json()['api_key']}"}
    user_id = response.json()["user_id"]
    # A secret that no longer decrypts (a SECRET_KEY rotated away): nothing can be signed.
    stack.sql(
        "UPDATE users SET webhook_secret_encrypted = :junk WHERE id = :id RETURNING id",
        junk=b"junk",
        id=user_id,
    )
    # The account goes after: `tabpfn-api rotate-secret` on this stack (test_accounts.py)
    # stops at a secret it cannot decrypt, and under `make test` that may run after this.
    request.addfinalizer(
        lambda: stack.sql("DELETE FROM users WHERE id = :id RETURNING id", id=user_id)
    )
    job_id = _submit(api, headers, receiver.url)
    [delivery] = _deliveries(api, headers, job_id, lambda d: d and d[0]["status"] != "pending")
    # Each attempt logged with why, on the schedule (0.5, 1, 2 s), then given up;
    # it stayed pending, unlogged, and was sent again by every sweep.
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == 4
    for attempt in delivery["attempts"]:
        assert attempt["status_code"] is None
        assert "signing secret could not be decrypted" in attempt["error"], attempt
    assert receiver.received == []


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_an_ipv6_receiver_gets_a_host_header_in_brackets(api):
    receiver, server = start_receiver("::1")
    try:
        headers, _ = _setup(api)
        _submit(api, headers, receiver.url)
        [received] = receiver.wait_for(1)
    finally:
        server.shutdown()
    port = receiver.url.split("]:")[1].split("/")[0]
    assert received.headers["Host"] == f"[::1]:{port}"


@pytest.fixture(scope="module")
def narrow_stack(services, tmp_path_factory):
    """One worker process of 8 slots: deliveries may take 2 of them (WEBHOOK_SLOT_SHARE)."""
    with own_stack(
        services,
        tmp_path_factory.mktemp("webhook-slots"),
        tokens=[fresh_token() for _ in range(4)],
        worker_args=("--concurrency", "8"),
        WORKER_PROCESSES="1",
        WEBHOOK_SLOT_SHARE="0.25",
        # First attempts only: what this test counts.
        WEBHOOK_RETRY_SCHEDULE_S="60",
    ) as stack:
        yield stack


def test_deliveries_take_at_most_their_share_of_the_slots(narrow_stack, receiver, request):
    def silent(handler) -> None:  # accepts and never answers
        while not sender_gone(handler, 0.25) and time.monotonic() - started < 60:
            pass

    receiver.answer = silent
    started = time.monotonic()
    with api_client(narrow_stack, request) as api:
        headers, _ = _setup(api, narrow_stack.env["EMULATOR_TOKENS"].split(",")[0])
        for _ in range(6):
            _submit(api, headers, receiver.url)
        # Jobs still run while the receiver holds every delivery open.
        others, _ = _setup(api, narrow_stack.env["EMULATOR_TOKENS"].split(",")[1])
        job = api.post("/jobs/fit", json=FIT, headers=others).json()
        assert wait_for_job(api, others, job["id"])["status"] == "succeeded"
    received = receiver.wait_for(6, timeout=60)
    assert len({r.headers["webhook-id"] for r in received}) == 6
    # Each attempt lasts the whole timeout; two slots start at most two in any span
    # shorter than it. (Unbounded, all six went out as their jobs ended.)
    arrivals = sorted(r.at for r in received)
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[2:], strict=False)]
    assert min(gaps) > _timeout_s(narrow_stack) / 2, arrivals


def _most_open_at_once(received) -> int:
    """The most requests that were open together (received, answer not yet over)."""
    starts = [(r.at, 1) for r in received]
    ends = [(r.ended or float("inf"), -1) for r in received]  # an end sorts before a start
    edges = sorted(starts + ends)
    open_now = most = 0
    for _, step in edges:
        open_now += step
        most = max(most, open_now)
    return most


def test_one_users_hanging_receivers_leave_a_slot_for_everyone_else(narrow_stack, request):
    """Two delivery slots: a user whose receiver never answers holds one of them, not
    both, and another user's webhook goes out at once. (Before, the first user's
    four deliveries held both slots, attempt after attempt.)"""
    tokens = narrow_stack.env["EMULATOR_TOKENS"].split(",")
    hanging, hanging_server = start_receiver()
    quick, quick_server = start_receiver()
    request.addfinalizer(hanging_server.shutdown)
    request.addfinalizer(quick_server.shutdown)
    started = time.monotonic()

    def silent(handler) -> None:
        while not sender_gone(handler, 0.25) and time.monotonic() - started < 60:
            pass

    hanging.answer = silent
    timeout_s = _timeout_s(narrow_stack)
    with api_client(narrow_stack, request) as api:
        flooding, _ = _setup(api, tokens[2])
        for _ in range(4):
            _submit(api, flooding, hanging.url)
        hanging.wait_for(1, timeout=60)
        other, _ = _setup(api, tokens[3])
        job_id = _submit(api, other, quick.url)
        assert wait_for_job(api, other, job_id)["status"] == "succeeded"
        ended = time.monotonic()
    [delivered] = quick.wait_for(1, timeout=30)
    # A free slot at once: no wait for one of the hanging attempts to time out.
    assert delivered.at - ended < timeout_s, (delivered.at - ended, timeout_s)
    # Two of the flood's attempts done, each having had the chance to overlap another.
    attempts = hanging.wait_until_ended(2, timeout=60)
    assert _most_open_at_once(hanging.received) == 1, [(r.at, r.ended) for r in attempts]
