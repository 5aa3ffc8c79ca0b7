"""The pure budget arithmetic (`batchchat.pacing.bucket`), pinned with explicit times: no clock, no sleeping."""

from __future__ import annotations

import itertools

import pytest

from batchchat.pacing.bucket import BucketState, Limits, adjust, adjust_requests, capacity, idle_after, pause, reserve

# 600 requests/min: 10/s, capacity 5 (half a second); 60,000 tokens/min: 1,000/s, capacity 500.
LIMITS = Limits(rpm=600, tpm=60_000, burst_seconds=0.5)


def test_capacity_is_burst_seconds_of_traffic_and_at_least_one() -> None:
    assert capacity(600, 0.5) == 5.0
    assert capacity(60_000, 0.5) == 500.0
    assert capacity(60, 0.5) == 1.0  # half a request rounds up to one
    assert capacity(6, 1.0) == 1.0


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        Limits(rpm=0)
    with pytest.raises(ValueError):
        Limits(tpm=-1)
    with pytest.raises(ValueError):
        Limits(rpm=10, burst_seconds=0)


def test_first_request_primes_so_it_just_fits_and_no_burst_follows() -> None:
    state = BucketState()
    assert reserve(state, LIMITS, 100, now=10.0) == 0.0
    assert state.started
    assert state.requests == 5.0  # primed to 4, plus this one: full
    assert state.tokens == 500.0  # primed to 400, plus these 100
    # the next one at the same instant waits a tenth of a second (one request at 10/s)
    assert reserve(state, LIMITS, 100, now=10.0) == pytest.approx(0.1)
    assert state.requests == 5.0 and state.tokens == 500.0  # refused: nothing taken


def test_paced_at_the_rate_from_the_start() -> None:
    state = BucketState()
    admitted = []
    now = 0.0
    while now < 10.0:
        wait = reserve(state, LIMITS, 10, now)
        if wait == 0.0:
            admitted.append(now)
        else:
            now += wait
    # 10 requests a second from the first one: 100 in 10 s (the first at 0, the last at 9.9)
    assert len(admitted) == 100
    gaps = [b - a for a, b in itertools.pairwise(admitted)]
    assert min(gaps) == pytest.approx(0.1) and max(gaps) == pytest.approx(0.1)


def test_token_limit_binds_when_it_is_the_tighter_one() -> None:
    state = BucketState()
    assert reserve(state, LIMITS, 250, now=0.0) == 0.0  # primed to 250, plus 250: full
    # 250 more need 250 tokens to leak at 1,000/s
    assert reserve(state, LIMITS, 250, now=0.0) == pytest.approx(0.25)
    assert reserve(state, LIMITS, 250, now=0.2) == pytest.approx(0.05)
    assert reserve(state, LIMITS, 250, now=0.25) == 0.0


def test_burst_only_after_idle() -> None:
    state = BucketState()
    assert reserve(state, LIMITS, 0, now=0.0) == 0.0
    # idle for a second: the bucket is empty and holds five requests at once, then pacing again
    assert [reserve(state, LIMITS, 0, now=1.0) for _ in range(6)] == [0.0] * 5 + [pytest.approx(0.1)]


def test_request_larger_than_the_bucket_goes_from_empty_and_leaves_debt() -> None:
    state = BucketState()
    assert reserve(state, LIMITS, 1_200, now=0.0) == 0.0  # larger than the 500 bucket: primed to 0, admitted
    assert state.tokens == 1_200.0  # 700 of debt
    # the next request of 100 waits until 1,200 - 400 = 800 have leaked: 0.8 s
    assert reserve(state, LIMITS, 100, now=0.0) == pytest.approx(0.8)
    # a second large one waits for the bucket to be empty, then goes again (never starved, never rejected)
    assert reserve(state, LIMITS, 5_000, now=0.5) == pytest.approx(0.7)
    assert reserve(state, LIMITS, 5_000, now=1.2) == 0.0
    assert state.tokens == 5_000.0


def test_refund_and_charge() -> None:
    state = BucketState()
    reserve(state, LIMITS, 400, now=0.0)
    assert state.tokens == 500.0
    adjust(state, LIMITS, -300, now=0.0)  # the answer used 100, not 400
    assert state.tokens == 200.0
    assert reserve(state, LIMITS, 300, now=0.0) == pytest.approx(0.1)  # requests bind now (0.1 s)
    adjust(state, LIMITS, 1_000, now=0.1)  # the answer was larger than estimated: debt
    assert state.tokens == pytest.approx(200.0 - 100.0 + 1_000.0)
    adjust(state, LIMITS, -10_000, now=0.1)  # a refund never goes below empty
    assert state.tokens == 0.0


def test_refund_of_a_refused_attempts_request() -> None:
    state = BucketState()
    reserve(state, LIMITS, 0, now=0.0)
    assert reserve(state, LIMITS, 0, now=0.0) == pytest.approx(0.1)
    adjust_requests(state, LIMITS, -1, now=0.0)  # the server refused it (429): give its request back
    assert state.requests == 4.0
    assert reserve(state, LIMITS, 0, now=0.0) == 0.0
    adjust_requests(state, LIMITS, -10, now=0.0)
    assert state.requests == 0.0


def test_cooldown_holds_everyone_then_resumes_paced_not_in_a_burst() -> None:
    state = BucketState()
    reserve(state, LIMITS, 10, now=0.0)
    pause(state, LIMITS, 2.0, now=0.5)
    assert state.cooldown_until == 2.5
    # while it holds: the cooldown left, and the budget is primed afresh as of its end
    assert reserve(state, LIMITS, 10, now=1.0) == pytest.approx(1.5)
    # a shorter pause never shortens the cooldown
    pause(state, LIMITS, 0.1, now=1.0)
    assert state.cooldown_until == 2.5
    # traffic resumes at 10/s after the cooldown: the first just fits at its end, no burst of a whole bucket
    admitted, now = [], 2.5
    while len(admitted) < 10:
        wait = reserve(state, LIMITS, 10, now)
        if wait == 0.0:
            admitted.append(now)
        else:
            now += wait
    assert admitted[0] == pytest.approx(2.5)
    assert admitted[-1] == pytest.approx(3.4)
    gaps = [b - a for a, b in itertools.pairwise(admitted)]
    assert min(gaps) == pytest.approx(0.1)


def test_a_cooldown_costs_no_turn_beyond_itself() -> None:
    # one request per 6 s (10 RPM); a 429 that says "in 50 ms": the retry goes 50 ms later, not 6 s
    slow = Limits(rpm=10, tpm=None, burst_seconds=0.5)
    state = BucketState()
    assert reserve(state, slow, 0, now=0.0) == 0.0
    assert reserve(state, slow, 0, now=6.0) == 0.0
    adjust_requests(state, slow, -1.0, now=6.01)  # refused: its request given back
    pause(state, slow, 0.05, now=6.01)
    assert reserve(state, slow, 0, now=6.01) == pytest.approx(0.05)
    assert reserve(state, slow, 0, now=6.06) == 0.0
    assert reserve(state, slow, 0, now=6.06) == pytest.approx(6.0)


def test_pause_before_any_request_holds_the_first_one_too() -> None:
    state = BucketState()
    pause(state, LIMITS, 1.0, now=0.0)
    assert reserve(state, LIMITS, 10, now=0.5) == pytest.approx(0.5)
    assert reserve(state, LIMITS, 10, now=1.0) == 0.0
    assert reserve(state, LIMITS, 10, now=1.0) == pytest.approx(0.1)


def test_a_pause_keeps_debt() -> None:
    # a request larger than the bucket left debt: a cooldown shorter than the debt does not forgive it
    state = BucketState()
    reserve(state, LIMITS, 3_000, now=0.0)  # 3,000 tokens: 3 s to drain
    pause(state, LIMITS, 1.0, now=0.0)
    assert reserve(state, LIMITS, 10, now=1.0) == pytest.approx(1.51)  # 2,000 left; room for 10 in the 500


def test_limits_change_keeps_levels() -> None:
    state = BucketState()
    reserve(state, LIMITS, 100, now=0.0)
    assert (state.requests, state.tokens) == (5.0, 500.0)
    slower = Limits(rpm=60, tpm=6_000)  # 1/s, capacity 1; 100 tokens/s, capacity 50
    # the levels carried over are far above the new capacities: wait until they drain at the new rate
    assert reserve(state, slower, 10, now=0.0) == pytest.approx(max((5 + 1 - 1) / 1.0, (500 + 10 - 50) / 100.0))
    faster = Limits(rpm=6_000, tpm=600_000)  # capacity 50 and 5,000: the same levels fit at once
    assert reserve(state, faster, 10, now=0.0) == 0.0
    assert (state.requests, state.tokens) == (6.0, 510.0)


def test_none_limits_are_unlimited() -> None:
    state = BucketState()
    only_requests = Limits(rpm=600)
    assert reserve(state, only_requests, 10**9, now=0.0) == 0.0
    assert state.tokens == 0.0
    assert reserve(state, only_requests, 10**9, now=0.0) == pytest.approx(0.1)
    only_tokens = Limits(tpm=60_000)
    state = BucketState()
    assert [reserve(state, only_tokens, 100, now=0.0) for _ in range(2)] == [0.0, pytest.approx(0.1)]
    assert state.requests == 0.0
    unlimited = Limits()
    state = BucketState()
    assert all(reserve(state, unlimited, 10**6, now=0.0) == 0.0 for _ in range(1_000))
    pause(state, unlimited, 1.0, now=0.0)  # a cooldown holds even an unlimited budget
    assert reserve(state, unlimited, 1, now=0.25) == pytest.approx(0.75)
    assert reserve(state, unlimited, 1, now=1.0) == 0.0


def test_cooldown_and_shortfall_take_the_longest_wait() -> None:
    state = BucketState()
    reserve(state, LIMITS, 0, now=0.0)
    state.requests = 10.0  # 5 over capacity + 1: 0.6 s at 10/s
    state.cooldown_until = 0.3
    assert reserve(state, LIMITS, 0, now=0.0) == pytest.approx(0.6)
    state.cooldown_until = 2.0
    assert reserve(state, LIMITS, 0, now=0.0) == pytest.approx(2.0)


def test_time_running_backwards_leaks_nothing() -> None:
    state = BucketState()
    reserve(state, LIMITS, 0, now=5.0)
    assert reserve(state, LIMITS, 0, now=4.0) == pytest.approx(1.1)  # as at 5.0 (0.1), plus the second back
    assert state.stamp == 5.0


def test_idle_after_covers_debt_and_cooldown() -> None:
    state = BucketState()
    reserve(state, LIMITS, 3_000, now=0.0)  # 3,000 tokens of level: 3 s to drain
    assert idle_after(state, LIMITS) == pytest.approx(3.0)
    pause(state, LIMITS, 10.0, now=1.0)  # the cooldown outlasts the debt
    assert idle_after(state, LIMITS) == pytest.approx(11.0)
