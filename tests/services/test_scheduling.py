"""Who runs next, on real PostgreSQL and Redis: round-robin, FIFO, the cap, pacing, waiting.

These call the scheduler's service functions directly (no worker, no HTTP), so
a failure points at the policy; tests/e2e/test_fair_share.py runs the whole stack.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from shared.accounts.security import encrypt_secret, token_fingerprint
from shared.core.db import session_scope
from shared.jobs import states as js
from shared.jobs.scheduling import claim_next
from shared.jobs.waiting import user_queue, waiting
from shared.models import Job, User
from shared.upstream import pacing
from tests.support.inprocess import configured

LIMITS = {
    "MAX_RUNNING_PER_USER": "3",
    "UPSTREAM_FITS_PER_MINUTE": "1000",
    "UPSTREAM_PREDICTIONS_PER_MINUTE": "1000",
    "UPSTREAM_UPLOADS_PER_MINUTE": "1000",
}


@pytest.fixture
def scheduler_db(services, request):
    settings = {**LIMITS, **getattr(request, "param", {})}
    with configured(services, **settings) as url:
        yield url


def make_user(*, token: str | None = None) -> uuid.UUID:
    with session_scope() as session:
        user = User(
            tabpfn_token_encrypted=encrypt_secret(token or f"token-{uuid.uuid4().hex}"),
            webhook_secret_encrypted=encrypt_secret("whsec_x"),
        )
        session.add(user)
        session.flush()
        return user.id


def make_jobs(user_id: uuid.UUID, n: int, *, type_: str = js.FIT_PREDICT) -> list[uuid.UUID]:
    """n queued jobs, one millisecond apart so FIFO order is well defined."""
    base = datetime.now(UTC) - timedelta(minutes=1)
    with session_scope() as session:
        jobs = [
            Job(
                user_id=user_id,
                type=type_,
                status=js.QUEUED,
                task=js.CLASSIFICATION,
                params={},
                created_at=base + timedelta(milliseconds=i),
            )
            for i in range(n)
        ]
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


def owner(job_id: uuid.UUID) -> uuid.UUID:
    with session_scope() as session:
        return session.scalar(select(Job.user_id).where(Job.id == job_id))


def finish(job_id: uuid.UUID) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=js.SUCCEEDED))


# Both ways of claiming: the usual looks, and a submit's first claim on an idle
# node (`first_free`: the first user no slot holds and its lock, in one statement).
CLAIM_WAYS = pytest.mark.parametrize("first_free", [False, True], ids=["looks", "first_free"])


@CLAIM_WAYS
def test_free_slots_go_round_robin_between_users_and_fifo_within_one(scheduler_db, first_free):
    a, b, c = make_user(), make_user(), make_user()
    jobs = {a: make_jobs(a, 4), b: make_jobs(b, 2), c: make_jobs(c, 1)}
    order = []
    while (pick := claim_next(first_free=first_free)).claim is not None:
        order.append(pick.claim.job_id)
        finish(pick.claim.job_id)  # a slot frees: the cap never binds here
    users = [owner(j) for j in order]
    # Every user with work is served once before anyone is served twice, and so on.
    assert set(users[:3]) == {a, b, c}
    assert set(users[3:5]) == {a, b}
    assert users[5:] == [a, a]
    for theirs in jobs.values():
        assert [j for j in order if j in theirs] == theirs  # FIFO within a user


@CLAIM_WAYS
def test_one_user_never_runs_more_than_the_cap(scheduler_db, first_free):
    a, b = make_user(), make_user()
    make_jobs(a, 6)
    claimed = [claim_next(first_free=first_free).claim for _ in range(4)]
    assert all(claimed[:3]) and claimed[3] is None  # MAX_RUNNING_PER_USER=3
    with session_scope() as session:
        queue = user_queue(session=session, user_id=a)
        job = session.scalars(select(Job).where(Job.user_id == a, Job.status == js.QUEUED)).first()
        assert waiting(job, queue)["reason"] == "fair_share"
    b_job = make_jobs(b, 1)[0]
    assert claim_next(first_free=first_free).claim.job_id == b_job  # another user gets a slot
    finish(claimed[0].job_id)
    assert owner(claim_next(first_free=first_free).claim.job_id) == a  # a freed slot of A's


@CLAIM_WAYS
@pytest.mark.parametrize("scheduler_db", [{"UPSTREAM_FITS_PER_MINUTE": "2"}], indirect=True)
def test_a_token_without_budget_waits_without_a_slot_and_others_run(scheduler_db, first_free):
    shared_token = f"shared-{uuid.uuid4().hex}"
    a, a_again, b = make_user(token=shared_token), make_user(token=shared_token), make_user()
    make_jobs(a, 3, type_=js.FIT)
    make_jobs(a_again, 1, type_=js.FIT)
    b_jobs = make_jobs(b, 3, type_=js.FIT)

    claims = []
    paused_users = set()
    while (pick := claim_next(first_free=first_free)).claim is not None or pick.paused:
        paused_users |= {p.user_id for p in pick.paused}
        if pick.claim is None:
            break
        claims.append(pick.claim.job_id)
        finish(pick.claim.job_id)
    owners = Counter(owner(j) for j in claims)
    # Two fits per minute per token: the two accounts sharing a token share two fits.
    assert owners[a] + owners[a_again] == 2
    assert owners[b] == 2
    assert paused_users >= {a} and set(b_jobs[2:]).isdisjoint(claims)

    with session_scope() as session:
        queue = user_queue(session=session, user_id=a)
        job = session.scalars(select(Job).where(Job.user_id == a, Job.status == js.QUEUED)).first()
        shown = waiting(job, queue)
    assert shown["reason"] == "upstream_rate_limit"
    assert datetime.now(UTC) < shown["until"] <= datetime.now(UTC) + timedelta(seconds=61)


@CLAIM_WAYS
def test_a_token_this_process_cannot_decrypt_holds_up_no_one_else(scheduler_db, first_free):
    """Found in an operator's audit: mid-rotation, an API with the new SECRET_KEY
    stored an account's token that a worker with the old one cannot read. Its claim
    raised, and the same user came first in every look: no one's job ran."""
    from cryptography.fernet import Fernet

    stranger = make_user()
    with session_scope() as session:
        session.execute(
            update(User)
            .where(User.id == stranger)
            .values(tabpfn_token_encrypted=Fernet(Fernet.generate_key()).encrypt(b"token"))
        )
    waits = make_jobs(stranger, 2)
    other = make_jobs(make_user(), 1)[0]
    assert claim_next(first_free=first_free).claim.job_id == other
    assert claim_next(first_free=first_free).claim is None  # and nothing of theirs runs
    with session_scope() as session:
        statuses = session.scalars(select(Job.status).where(Job.id.in_(waits))).all()
    assert statuses == [js.QUEUED, js.QUEUED]


@CLAIM_WAYS
@pytest.mark.parametrize("scheduler_db", [{"UPSTREAM_FITS_PER_MINUTE": "1"}], indirect=True)
def test_canceling_what_a_pause_held_back_lifts_it(scheduler_db, first_free):
    """Found in a user's audit: a backlog of fits paused its user until the fit window
    reopened; canceled, the pause stayed, and a lone prediction sent next waited
    out the fit window with the prediction budget untouched."""
    from shared.jobs.lifecycle import cancel_job
    from shared.jobs.scheduling import pause_user

    user = make_user()
    first, *backlog = make_jobs(user, 3, type_=js.FIT)
    assert claim_next(first_free=first_free).claim.job_id == first
    finish(first)
    pick = claim_next(first_free=first_free)
    assert pick.claim is None and [p.user_id for p in pick.paused] == [user]
    with session_scope() as session:
        assert cancel_job(session=session, job_id=backlog[0])
    with session_scope() as session:  # one fit still queued: the pause still holds
        assert session.scalar(select(User.upstream_paused_until).where(User.id == user))
        assert cancel_job(session=session, job_id=backlog[1])
    predict = make_jobs(user, 1, type_=js.PREDICT)[0]
    assert claim_next(first_free=first_free).claim.job_id == predict
    # A pause decided for work that was canceled meanwhile is not set at all.
    finish(predict)
    with session_scope() as session:
        pause_user(session=session, user_id=user, until=datetime.now(UTC) + timedelta(hours=1))
    with session_scope() as session:
        assert session.scalar(select(User.upstream_paused_until).where(User.id == user)) is None


def test_a_process_with_no_secret_key_at_all_stops_claiming_loudly(scheduler_db, monkeypatch):
    """Only a token that does not decrypt skips its account. A process missing
    SECRET_KEY altogether (also a RuntimeError) must say so, not skip every account
    one by one and leave every job queued in silence."""
    from shared.accounts import security
    from shared.core.config import MissingSettingError

    make_jobs(make_user(), 1)

    def missing() -> None:
        raise MissingSettingError("SECRET_KEY is not set")

    monkeypatch.setattr(security, "_cipher", missing)
    with pytest.raises(MissingSettingError):
        claim_next()


@CLAIM_WAYS
def test_parallel_slots_never_claim_a_job_twice_nor_overrun_the_cap(scheduler_db, first_free):
    users = [make_user() for _ in range(4)]
    for user in users:
        make_jobs(user, 5)
    claimed: list[uuid.UUID] = []
    lock = threading.Lock()

    def slot() -> None:
        for _ in range(6):
            pick = claim_next(first_free=first_free)
            if pick.claim is not None:
                with lock:
                    claimed.append(pick.claim.job_id)

    threads = [threading.Thread(target=slot) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == len(set(claimed)) == 12  # 4 users × cap 3, nothing finished
    assert Counter(owner(j) for j in claimed) == {user: 3 for user in users}


def test_a_retry_backoff_shows_as_waiting_until_its_time(scheduler_db):
    a = make_user()
    job_id = make_jobs(a, 1)[0]
    later = datetime.now(UTC) + timedelta(seconds=30)
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(run_after=later, wait_reason=None)
        )
    assert claim_next().claim is None
    with session_scope() as session:
        job = session.get(Job, job_id)
        shown = waiting(job, user_queue(session=session, user_id=a))
    assert shown == {"reason": "retry_backoff", "until": later}


@pytest.mark.parametrize("scheduler_db", [{"UPSTREAM_FITS_PER_MINUTE": "3"}], indirect=True)
def test_pacing_reserves_all_of_a_jobs_calls_or_none(scheduler_db):
    fingerprint = token_fingerprint(f"t-{uuid.uuid4().hex}")
    fit_predict = pacing.calls_for(js.FIT_PREDICT)
    assert pacing.reserve(fingerprint, fit_predict) is None
    assert pacing.reserve(fingerprint, fit_predict) is None
    assert pacing.reserve(fingerprint, {"fit": 2}) is not None  # 2 + 2 > 3: nothing taken
    assert pacing.reserve(fingerprint, {"fit": 1}) is None  # the refused call spent nothing
    used = {(w.kind, w.window_s): w.used for w in pacing.window_use(fingerprint)}
    assert used[("fit", 60.0)] == 3 and used[("predict", 60.0)] == 2
    assert used[("upload", 60.0)] == 4


def test_a_submit_in_progress_does_not_hold_up_its_users_claims(scheduler_db):
    """A submit's open transaction (its job inserted, its commit still to come) holds
    FOR KEY SHARE on its owner's row, through the foreign key. The claim's lock on the
    same row must not wait for it: one user's burst of submits would stall the slots
    claiming that user's jobs (and queue the next submits behind them)."""
    user_id = make_user()
    [queued] = make_jobs(user_id, 1)
    with session_scope() as submitting:
        submitting.add(
            Job(user_id=user_id, type=js.FIT, status=js.QUEUED, task=js.CLASSIFICATION, params={})
        )
        submitting.flush()  # the INSERT ran; the commit waits, as between two thread hops
        started = time.monotonic()
        pick = claim_next()
        elapsed = time.monotonic() - started
        assert pick.claim is not None and pick.claim.job_id == queued
        # The lock's wait (lock_timeout) is 2 s; a claim is milliseconds.
        assert elapsed < 1.0, f"the claim waited {elapsed:.2f}s for the submit"


def test_a_first_free_claim_takes_the_next_user_while_a_slot_holds_the_first(scheduler_db):
    """The first user in round-robin order is held by another slot (its row lock, as
    mid-claim): a submit's first claim takes the next user's job at once, in the same
    statement that looks, instead of waiting for the lock or looking twice."""
    first, second = make_user(), make_user()
    make_jobs(first, 1)
    [theirs] = make_jobs(second, 1)
    with session_scope() as session:
        served = datetime.now(UTC) - timedelta(hours=1)
        session.execute(update(User).where(User.id == first).values(last_served_at=served))
        later = served + timedelta(seconds=1)
        session.execute(update(User).where(User.id == second).values(last_served_at=later))
    with session_scope() as holder:
        holder.execute(select(User.id).where(User.id == first).with_for_update())
        started = time.monotonic()
        pick = claim_next(first_free=True)
        elapsed = time.monotonic() - started
    assert pick.claim is not None and pick.claim.job_id == theirs
    assert elapsed < 1.0, f"the claim waited {elapsed:.2f}s for the held user"
    # Released, the first user's job is next.
    assert owner(claim_next(first_free=True).claim.job_id) == first


def test_a_first_free_claim_on_an_empty_queue_claims_nothing(scheduler_db):
    make_user()
    pick = claim_next(first_free=True)
    assert pick.claim is None and pick.paused == []


def _buffers_read(plan: dict) -> int:
    return plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)


@pytest.mark.parametrize("lock_first_free", [False, True])
def test_a_look_at_the_queue_costs_the_users_with_work_not_every_account(
    scheduler_db, lock_first_free
):
    """Idle accounts (most of a service's, and those never served sort first) are not
    walked: the look starts from the users with queued jobs."""
    from shared.jobs import scheduling

    with session_scope() as session:
        session.execute(
            text(
                "INSERT INTO users (id, tabpfn_token_encrypted, webhook_secret_encrypted) "
                "SELECT gen_random_uuid(), 'x', 'y' FROM generate_series(1, 3000)"
            )
        )
    a = make_user()
    make_jobs(a, 2)
    with session_scope() as session:  # the planner sees the tables as they are
        session.execute(text("ANALYZE users"))
        session.execute(text("ANALYZE jobs"))
    statement = scheduling._FIRST_FREE if lock_first_free else scheduling._CANDIDATES
    with session_scope() as session:
        explain = text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement.text)
        params = {"cap": 3, "n": 1 if lock_first_free else scheduling.CANDIDATES, "skip": []}
        [[report]] = session.execute(explain, params).all()
        assert [row.user_id for row in session.execute(statement, params)] == [a]
    # Walking the 3,000 idle accounts in served order read over 9,000 buffers.
    assert _buffers_read(report[0]["Plan"]) < 100
