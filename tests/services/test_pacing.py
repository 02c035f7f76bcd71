"""Each token's upstream budget as a sliding log, on real Redis (shared/upstream/pacing.py).

The cloud's fixed windows may open on the clock or at a token's first request:
the budget must never let more than a window's limit of calls through in any
span of the window's length, wherever the upstream's window starts.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from shared.accounts.security import token_fingerprint
from shared.upstream import pacing
from tests.support.inprocess import configured

FITS = {"fit": 1}
SPAN = 60.0 + 0.6  # a minute, counted 1 % longer (pacing._span)


@pytest.fixture
def three_fits_a_minute(services):
    with configured(
        services,
        UPSTREAM_FITS_PER_MINUTE="3",
        UPSTREAM_PREDICTIONS_PER_MINUTE="1000",
        UPSTREAM_UPLOADS_PER_MINUTE="1000",
    ) as url:
        yield url


def _token() -> str:
    return token_fingerprint(f"t-{uuid.uuid4().hex}")


def test_no_span_of_a_window_holds_more_than_its_limit(three_fits_a_minute):
    fingerprint = _token()
    # Three calls late in one clock minute...
    for now in (1_000_000_000 + 57.0, 1_000_000_000 + 58.0, 1_000_000_000 + 59.0):
        assert pacing.reserve(fingerprint, FITS, now=now) is None
    # ...do not let three more through as the next clock minute opens: an upstream
    # window opened at the first of them would still be full.
    later = 1_000_000_000 + 61.0
    until = pacing.reserve(fingerprint, FITS, now=later)
    assert until == datetime.fromtimestamp(1_000_000_000 + 57.0 + SPAN, UTC)
    # The first call's entry leaves the window at that moment, and one call passes.
    assert pacing.reserve(fingerprint, FITS, now=until.timestamp()) is None
    assert pacing.reserve(fingerprint, FITS, now=until.timestamp() + 0.1) is not None


def test_a_refused_reservation_takes_nothing_and_says_when_enough_has_left(
    three_fits_a_minute,
):
    fingerprint = _token()
    start = 2_000_000_000.0
    for offset in (0.0, 1.0, 2.0):
        assert pacing.reserve(fingerprint, FITS, now=start + offset) is None
    # Two calls need the two oldest to leave: the second oldest's exit.
    until = pacing.reserve(fingerprint, {"fit": 2}, now=start + 10)
    assert until == datetime.fromtimestamp(start + 1.0 + SPAN, UTC)
    uses = {(w.kind, w.window): w for w in pacing.window_use(fingerprint, now=start + 10)}
    assert uses[("fit", "minute")].used == 3  # the refused two took nothing
    assert uses[("fit", "minute")].resets_at == datetime.fromtimestamp(start + SPAN, UTC)


def test_a_refund_gives_back_exactly_its_own_calls(three_fits_a_minute):
    fingerprint = _token()
    now = 2_100_000_000.0
    kept, returned = pacing.new_reservation(), pacing.new_reservation()
    assert pacing.reserve(fingerprint, {"fit": 2}, now=now, reservation=kept) is None
    assert pacing.reserve(fingerprint, FITS, now=now, reservation=returned) is None
    assert pacing.reserve(fingerprint, FITS, now=now) is not None  # 3 of 3 spent
    pacing.refund(fingerprint, FITS, reservation=returned)
    assert pacing.reserve(fingerprint, FITS, now=now + 0.01) is None
    assert pacing.reserve(fingerprint, FITS, now=now + 0.02) is not None


def _near(moment: datetime | None, expected: datetime) -> bool:
    # Redis's clock goes back to the caller's: the same moment, give or take the
    # microseconds between the two clocks' readings.
    return moment is not None and abs((moment - expected).total_seconds()) < 0.05


def test_a_429_closes_the_tokens_budget_until_the_window_reopens(three_fits_a_minute):
    fingerprint = _token()
    until = datetime.fromtimestamp(datetime.now(UTC).timestamp() + 30, UTC)
    pacing.exhaust(fingerprint, until)
    assert _near(pacing.reserve(fingerprint, FITS), until)
    assert _near(pacing.reserve(fingerprint, {"upload": 1}), until)  # every kind of the token
    fit_minute = next(
        w for w in pacing.window_use(fingerprint) if (w.kind, w.window) == ("fit", "minute")
    )
    assert fit_minute.used == 3 and _near(fit_minute.resets_at, until)
    # The hour windows keep their counts: a 30-s closing is not an hour's budget spent.
    hours = [w for w in pacing.window_use(fingerprint) if w.window == "hour"]
    assert hours and all(w.used == 0 and w.used < w.limit for w in hours)
    assert pacing.reserve(fingerprint, FITS, now=until.timestamp() + 0.05) is None
    assert pacing.reserve(_token(), FITS) is None  # other tokens are not touched


@pytest.fixture
def one_prediction_a_minute(services):
    with configured(
        services,
        UPSTREAM_FITS_PER_MINUTE="1000",
        UPSTREAM_PREDICTIONS_PER_MINUTE="1",
        UPSTREAM_UPLOADS_PER_MINUTE="1000",
    ) as url:
        yield url


FIT_PREDICT = {"fit": 1, "predict": 1, "upload": 2}


def test_a_prediction_made_after_a_long_fit_is_counted_when_it_is_made(
    one_prediction_a_minute,
):
    fingerprint = _token()
    start = 2_200_000_000.0
    first = pacing.new_reservation()
    assert pacing.reserve(fingerprint, FIT_PREDICT, now=start, reservation=first) is None
    # Its fit took 30 s: the prediction's entry moves from the claim to the call.
    assert pacing.restamp(fingerprint, pacing.calls_after_fit(first), now=start + 30) is None
    # Stamped at the claim, it would have left the window at start + 60.6; where the
    # call was made, the next fit-predict waits for the call's window.
    until = pacing.reserve(fingerprint, FIT_PREDICT, now=start + 61)
    assert until == datetime.fromtimestamp(start + 30 + SPAN, UTC)


def test_a_prediction_waits_for_room_beside_calls_claimed_while_it_fitted(
    one_prediction_a_minute,
):
    fingerprint = _token()
    start = 2_300_000_000.0
    slow, quick = pacing.new_reservation(), pacing.new_reservation()
    assert pacing.reserve(fingerprint, FIT_PREDICT, now=start, reservation=slow) is None
    # The slow job's entry left the window while it was still fitting; another job
    # was admitted and predicted meanwhile.
    assert pacing.reserve(fingerprint, FIT_PREDICT, now=start + 61, reservation=quick) is None
    # The slow job's prediction must wait for that one's window, and moves nothing.
    until = pacing.restamp(fingerprint, pacing.calls_after_fit(slow), now=start + 62)
    assert until == datetime.fromtimestamp(start + 61 + SPAN, UTC)
    assert pacing.restamp(fingerprint, pacing.calls_after_fit(slow), now=until.timestamp()) is None


def test_a_claim_names_its_reservation(services):
    from shared.jobs.scheduling import claim_next
    from tests.services.test_scheduling import LIMITS, make_jobs, make_user

    with configured(services, **{**LIMITS, "UPSTREAM_PREDICTIONS_PER_MINUTE": "1"}):
        token = f"t-{uuid.uuid4().hex}"
        make_jobs(make_user(token=token), 1)
        claim = claim_next().claim
        assert claim is not None and claim.reservation
        fingerprint = token_fingerprint(token)
        # The claimed job's own prediction entry is there to move: one a minute, and
        # it is that one, so moving it needs no room.
        entries = pacing.calls_after_fit(claim.reservation)
        assert pacing.reserve(fingerprint, {"predict": 1}) is not None
        assert pacing.restamp(fingerprint, entries) is None


def _on_a_clock(monkeypatch, skew_s: float) -> None:
    """This process is now a node whose clock runs `skew_s` ahead of the others'."""
    real = pacing.time.time
    monkeypatch.setattr(pacing.time, "time", lambda: real() + skew_s)


def _within(moment: datetime | None, low: float, high: float) -> bool:
    # Bounds read from a local clock before and after the calls under test: a loaded
    # machine's seconds between them are allowed, a node's skew (5 s, 61 s) is not.
    return moment is not None and low - 0.05 <= moment.timestamp() <= high + 0.05


@pytest.mark.parametrize("skew_s", [-5.0, 61.0])
def test_nodes_with_clocks_apart_share_one_log(three_fits_a_minute, monkeypatch, skew_s):
    """A fleet's nodes stamp the log on Redis's clock, so none of them sees another's
    calls leave the window early, or late, because its own clock is off."""
    fingerprint = _token()
    real = time.time  # pacing.time is the time module: _on_a_clock skews time.time too
    before = real()
    assert pacing.reserve(fingerprint, {"fit": 3}) is None  # a node with the right time
    _on_a_clock(monkeypatch, skew_s)
    # Stamped and counted on its own clock, a node a minute ahead would see those
    # calls gone and spend a fourth call in their window (a 429 upstream); one 5 s
    # behind would tell its jobs to come back 5 s late.
    until = pacing.reserve(fingerprint, FITS)
    # On this node's clock: a minute (and its margin) after the calls.
    after = real()
    low, high = before + skew_s + SPAN, after + skew_s + SPAN
    assert _within(until, low, high)
    fit_minute = next(
        w for w in pacing.window_use(fingerprint) if (w.kind, w.window) == ("fit", "minute")
    )
    assert fit_minute.used == 3 and _within(fit_minute.resets_at, low, high)
    # A 429 it meets closes the token for as long as the upstream said, on every node.
    before = real()
    pacing.exhaust(fingerprint, datetime.fromtimestamp(pacing.time.time() + 30, UTC))
    monkeypatch.undo()
    after = real()
    assert _within(pacing.reserve(fingerprint, {"upload": 1}), before + 30, after + 30)


def _counted(fingerprint: str) -> dict[str, int]:
    return {w.kind: w.used for w in pacing.window_use(fingerprint) if w.window == "minute"}


def test_a_run_that_ends_early_gives_back_the_calls_it_never_sent(three_fits_a_minute):
    """Found in an audit: a fit-predict that failed on its fit, was handed back at a
    drain or waited for a window kept its prediction's entries, holding budget (an
    hour's, in the hour windows) for calls never made; its next claim reserved again."""
    fingerprint = _token()
    fit_done = pacing.new_reservation()
    assert pacing.reserve(fingerprint, FIT_PREDICT, reservation=fit_done) is None
    nothing_sent = pacing.new_reservation()
    assert pacing.reserve(fingerprint, FIT_PREDICT, reservation=nothing_sent) is None
    assert _counted(fingerprint) == {"fit": 2, "predict": 2, "upload": 4}
    # The first ended after its fit began: its fit and training upload stay counted.
    pacing.refund_unsent(fingerprint, "fit_predict", reservation=fit_done, sent={"fit"})
    assert _counted(fingerprint) == {"fit": 2, "predict": 1, "upload": 3}
    # The second before anything was sent: all of it goes back.
    pacing.refund_unsent(fingerprint, "fit_predict", reservation=nothing_sent, sent=set())
    assert _counted(fingerprint) == {"fit": 1, "predict": 0, "upload": 1}
    # A finished run gives nothing back.
    pacing.refund_unsent(fingerprint, "fit_predict", reservation=fit_done, sent={"fit", "predict"})
    assert _counted(fingerprint) == {"fit": 1, "predict": 0, "upload": 1}


def test_a_job_that_cannot_run_gives_back_everything_it_reserved(services):
    """A prediction whose model was deleted before its claim ends at once: nothing was
    sent, so nothing stays counted (before, its prediction and upload did, for an hour)."""
    from shared.jobs.scheduling import claim_next
    from tests.services.test_scheduling import LIMITS, make_jobs, make_user
    from worker.runner import run_claimed

    with configured(services, **LIMITS):
        token = f"t-{uuid.uuid4().hex}"
        [job_id] = make_jobs(make_user(token=token), 1, type_="predict")  # no model
        claim = claim_next().claim
        assert claim is not None and claim.job_id == job_id
        fingerprint = token_fingerprint(token)
        assert _counted(fingerprint) == {"fit": 0, "predict": 1, "upload": 1}
        run_claimed(claim)
        assert _counted(fingerprint) == {"fit": 0, "predict": 0, "upload": 0}
