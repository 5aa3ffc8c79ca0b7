"""A model's budget paces requests and tokens: no burst at the start, large requests, settling, cooldowns.

Pacing is tested on a fake clock (time moves only when the budget sleeps), so the figures are exact and
nothing sleeps; one test on the real clock checks that the seam is wired, with a one-sided bound only.
"""

from __future__ import annotations

import time

import anyio
import pytest
from test_budget import FakeClock, make_budget

from batchchat.pacing.budget import Budget
from batchchat.pacing.store import LocalStore
from batchchat.pacing.timing import GUARD_SHARE


async def _acquire_all(budget: Budget, clock: FakeClock, n: int, tokens: int = 1) -> float:
    start = clock.now
    for _ in range(n):
        await budget.acquire(tokens)
    return clock.now - start


async def test_no_minute_sized_burst_at_start() -> None:
    clock = FakeClock()
    budget = make_budget(clock, rpm=6000)  # 100/s
    assert await _acquire_all(budget, clock, 150) == pytest.approx(1.49, abs=0.005)  # the first at once


async def test_paced_from_the_first_request_and_bursts_only_after_idling() -> None:
    clock = FakeClock()
    budget = make_budget(clock, rpm=6000, burst_seconds=0.2)  # 100/s, a bucket of 20
    assert await _acquire_all(budget, clock, 21) == pytest.approx(0.2, abs=0.005)  # no burst at the start
    clock.now += 0.25  # idle: the bucket drains
    assert await _acquire_all(budget, clock, 20) == 0.0  # then a burst of 0.2 s of budget
    assert await _acquire_all(budget, clock, 20) == pytest.approx(0.2, abs=0.005)


async def test_token_budget_paces_by_tokens() -> None:
    clock = FakeClock()
    budget = make_budget(clock, tpm=60_000)  # 1,000 tokens/s
    # the first at once, then 2,500 tokens paced (a bucket of 500 primed full)
    assert 2.5 <= await _acquire_all(budget, clock, 6, tokens=500) <= 2.5 * (1 + GUARD_SHARE) + 1e-6


async def test_request_larger_than_the_bucket_is_neither_rejected_nor_starved() -> None:
    clock = FakeClock()
    budget = make_budget(clock, tpm=6_000)  # 100 tokens/s, a bucket of 50
    clock.now += 10
    await budget.acquire(1)  # start the budget
    clock.now += 10  # ...and let it drain
    assert await _acquire_all(budget, clock, 1, tokens=250) == 0.0  # an empty bucket takes it whole
    assert await _acquire_all(budget, clock, 1, tokens=10) >= 2.0  # the debt drains first


async def test_refund_lets_the_next_request_through_sooner() -> None:
    clock = FakeClock()
    budget = make_budget(clock, tpm=6_000)
    await budget.acquire(50)
    await budget.settle(-50)  # the request cost nothing after all
    assert await _acquire_all(budget, clock, 1, tokens=50) == 0.0


async def test_extra_charge_slows_the_next_request() -> None:
    clock = FakeClock()
    budget = make_budget(clock, tpm=6_000)
    await budget.acquire(10)
    await budget.settle(200)  # it cost far more than estimated
    assert await _acquire_all(budget, clock, 1, tokens=10) >= 2.0


async def test_pause_holds_every_caller_and_resumes_paced() -> None:
    clock = FakeClock()
    budget = make_budget(clock, rpm=6000)
    await budget.acquire(1)
    await budget.pause(3.0)
    assert await budget.cooldown_remaining() == 3.0
    # after the cooldown the bucket is full: 10 more go at the paced rate, not in a burst
    assert await _acquire_all(budget, clock, 10) == pytest.approx(3.1, abs=0.01)


async def test_pause_reaches_a_request_already_waiting_for_capacity() -> None:
    clock = FakeClock()
    budget = make_budget(clock, rpm=60)  # one a second
    await budget.acquire(1)
    done = anyio.Event()

    async def second() -> None:
        await budget.acquire(1)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.lowlevel.checkpoint()
        await budget.pause(5.0)  # a 429 came in while it waited
    assert clock.now >= 1_000_020.0 + 5.0


async def test_unlimited_is_free() -> None:
    clock = FakeClock()
    budget = make_budget(clock)
    budget.headers_seen = False  # a server without limits
    assert await _acquire_all(budget, clock, 1000, tokens=10_000) == 0.0


@pytest.mark.parametrize("rpm", [1, 30, 59])
async def test_slow_budgets_still_admit_one_request(rpm: int) -> None:
    clock = FakeClock()
    budget = make_budget(clock, rpm=rpm)
    assert await _acquire_all(budget, clock, 1) == 0.0
    # a turn at the limit, and at most the guard (`GUARD_SHARE` of a turn) against arrival jitter
    assert 60 / rpm <= await _acquire_all(budget, clock, 1) <= 60 / rpm * (1 + GUARD_SHARE) + 1e-6


async def test_the_real_clock_paces_too() -> None:
    budget = Budget(LocalStore(), "k", "gpt-4o-mini", rpm=6000)  # 100/s on the real clock
    start = time.monotonic()
    for _ in range(31):
        await budget.acquire(1)
    assert time.monotonic() - start >= 0.29  # a limiter may never be faster than its budget
