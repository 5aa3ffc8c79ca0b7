"""The dual budget: smooth pacing, large requests, settling, and the shared cooldown.

Timing assertions are one-sided where the machine's noise could only make things slower: a limiter may
never let traffic through faster than its budget, so "took at least" holds on any machine.
"""

from __future__ import annotations

import time

import anyio
import pytest

from batchchat.pacing.limiter import RateLimiter


async def _acquire_all(limiter: RateLimiter, n: int, tokens: int = 1) -> float:
    start = time.monotonic()
    for _ in range(n):
        await limiter.acquire(tokens)
    return time.monotonic() - start


async def test_no_minute_sized_burst_at_start() -> None:
    # 6,000 rpm = 100/s: 150 requests cannot finish before ~1.5 s
    limiter = RateLimiter(rpm=6000)
    elapsed = await _acquire_all(limiter, 150)
    assert elapsed >= 1.45


async def test_paced_from_the_first_request_and_bursts_only_after_idling() -> None:
    limiter = RateLimiter(rpm=6000, burst_seconds=0.2)  # 100/s, a bucket of 20
    assert await _acquire_all(limiter, 21) >= 0.19  # no burst at the start
    await anyio.sleep(0.25)  # idle: the bucket drains
    assert await _acquire_all(limiter, 20) < 0.15  # then a burst of up to 0.2 s of budget
    assert await _acquire_all(limiter, 20) >= 0.15


async def test_token_budget_paces_by_tokens() -> None:
    limiter = RateLimiter(tpm=60_000)  # 1,000 tokens/s
    elapsed = await _acquire_all(limiter, 6, tokens=500)  # the first at once, 2,500 tokens paced
    assert elapsed >= 2.4


async def test_request_larger_than_the_bucket_is_neither_rejected_nor_starved() -> None:
    limiter = RateLimiter(tpm=6_000)  # 100 tokens/s, bucket 100
    with anyio.fail_after(2):
        await limiter.acquire(250)  # passes on an empty bucket, leaves 150 of debt
    start = time.monotonic()
    await limiter.acquire(10)  # must wait for the debt to drain (~1.5 s)
    assert time.monotonic() - start >= 1.4


async def test_refund_lets_the_next_request_through_sooner() -> None:
    limiter = RateLimiter(tpm=6_000)
    await limiter.acquire(100)
    limiter.settle(-100)  # the request cost nothing after all
    with anyio.fail_after(0.5):
        await limiter.acquire(100)


async def test_extra_charge_slows_the_next_request() -> None:
    limiter = RateLimiter(tpm=6_000)
    await limiter.acquire(10)
    limiter.settle(90)
    start = time.monotonic()
    await limiter.acquire(50)
    assert time.monotonic() - start >= 0.4


async def test_pause_holds_every_caller() -> None:
    limiter = RateLimiter()
    limiter.pause(0.3)
    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(limiter.acquire, 1)
    assert time.monotonic() - start >= 0.29
    assert limiter.cooldown_remaining == 0


async def test_pause_reaches_a_request_already_waiting_for_capacity() -> None:
    limiter = RateLimiter(rpm=600)  # 10/s, bucket 10
    await _acquire_all(limiter, 10)
    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.acquire, 1)
        await anyio.sleep(0.01)
        limiter.pause(0.5)
    assert time.monotonic() - start >= 0.5


async def test_unlimited_is_free() -> None:
    limiter = RateLimiter()
    assert await _acquire_all(limiter, 10_000, tokens=10**6) < 1.0


@pytest.mark.parametrize("rpm", [1, 10])
async def test_slow_budgets_still_admit_one_request(rpm: int) -> None:
    with anyio.fail_after(1):
        await RateLimiter(rpm=rpm).acquire(1)
