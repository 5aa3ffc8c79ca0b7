"""Limits learned from `x-ratelimit-limit-*` headers are shared through the budget store: what one budget learns
it publishes, another budget of the same key takes it up (before its probe in auto mode, then every
`LIMITS_PICKUP` seconds), on a fake clock over one `LocalStore`, over a real redis-server between two stores
(two processes), and through the real CLI against the real simulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import redis
from cli_process import PLANTED_KEY, chat_jobs, cli, run_args, write_jsonl
from test_budget import FakeClock

from batchchat.pacing.budget import LIMITS_PICKUP, Budget
from batchchat.pacing.headers import RateLimitHeaders
from batchchat.pacing.redis_store import RedisStore, namespace
from batchchat.pacing.shared import SharedStore
from batchchat.pacing.store import BudgetStore, LocalStore
from batchchat.simulator import Simulator

MODEL = "gpt-4o-mini"
KEY = "0123abcd" * 8




class CountingStore(LocalStore):
    """A `LocalStore` that counts how often the published limits are asked for."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.asked = 0

    async def learned_limits(self, key: str) -> tuple[float | None, float | None]:
        self.asked += 1
        return await super().learned_limits(key)


def make_budget(store: BudgetStore, clock: FakeClock, **options: Any) -> Budget:
    return Budget(store, KEY, MODEL, clock=clock, sleep=clock.sleep, **options)


def limits(rpm: float, tpm: float) -> RateLimitHeaders:
    return RateLimitHeaders(limit_requests=rpm, limit_tokens=tpm)


async def learn(budget: Budget, rpm: float, tpm: float) -> None:
    """`budget` sends its probe and its answer advertises `rpm` and `tpm`."""
    ticket = await budget.acquire(1)
    await budget.observe(200, limits(rpm, tpm), ticket)


async def test_limits_learned_from_headers_are_published() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    a = make_budget(store, clock)
    await learn(a, 6000, 600_000)
    assert await store.learned_limits(KEY) == (6000, 600_000)
    await a.observe(200, RateLimitHeaders(limit_tokens=300_000), None)  # only what changed is published
    assert await store.learned_limits(KEY) == (6000, 300_000)


async def test_a_budget_joining_a_fleet_that_knows_the_limits_sends_without_a_probe() -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    a = make_budget(store, clock)
    await learn(a, 6000, 600_000)
    b = make_budget(store, clock)  # auto: alone it would wait for its first answer's headers
    with anyio.fail_after(1):  # a probe's waiters wait `PROBE_PATIENCE` (5 s) for an answer that never comes
        await b.acquire(10)
        await b.acquire(10)
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(b.acquire, 10)
    assert b.headers_seen is None  # no answer was observed
    assert (b.rpm, b.tpm) == (6000, 600_000)
    assert store.asked == 2  # a's look before its probe, b's: one round trip per budget, not one per acquire


async def test_concurrent_first_requests_all_wait_for_the_look_at_the_store_not_for_a_probe() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    await learn(make_budget(store, clock), 6000, 600_000)
    b = make_budget(store, clock)
    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:  # the first asks the store, the others wait for its answer
            for _ in range(5):
                tg.start_soon(b.acquire, 10)
    assert (b.rpm, b.tpm) == (6000, 600_000)


async def test_a_lone_budget_still_probes_when_the_fleet_knows_nothing() -> None:
    clock = FakeClock()
    b = make_budget(LocalStore(clock), clock)
    await b.acquire(10)
    with anyio.move_on_after(0.2) as scope:
        await b.acquire(10)  # waits for the probe's answer
    assert scope.cancelled_caught


async def test_adopted_limits_start_primed() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    await learn(make_budget(store, clock), 600, 60_000)  # 10 requests/s: a bucket of 5
    clock.now += 60.0  # the fleet's budget drained
    b = make_budget(store, clock)
    start = clock.now
    for _ in range(3):
        await b.acquire(1)
    assert clock.now - start >= 0.15  # paced from the first (no burst of a whole bucket)


async def test_the_pickup_takes_a_lower_limit_after_limits_pickup_seconds_and_not_before() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    a, b = make_budget(store, clock), make_budget(store, clock)
    await learn(a, 60_000, 6_000_000)
    await b.acquire(1)  # takes up a's limits
    clock.now += 100.0  # everything drained
    await b.acquire(1)  # a look at the store: the next is due in `LIMITS_PICKUP` seconds
    asked_at = clock.now
    await a.observe(200, limits(30_000, 6_000_000), None)  # the server lowered the limit: a publishes it
    assert await store.learned_limits(KEY) == (30_000, 6_000_000)
    clock.now = asked_at + LIMITS_PICKUP - 0.01
    await b.acquire(1)
    assert b.rpm == 60_000
    clock.now = asked_at + LIMITS_PICKUP
    await b.acquire(1)
    assert (b.rpm, b.tpm) == (30_000, 6_000_000)


async def test_the_pickup_does_not_raise_a_limit_learned_from_the_budgets_own_answers() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    a, b = make_budget(store, clock), make_budget(store, clock)
    await learn(a, 6000, 600_000)
    await learn(b, 3000, 600_000)  # b's own answer says lower: b publishes it
    await a.observe(200, limits(9000, 600_000), None)  # a's later answer says higher: a publishes it
    clock.now += 2 * LIMITS_PICKUP
    await b.acquire(1)
    assert b.rpm == 3000  # b's own headers tell it when its limit rises


async def test_a_single_process_reads_back_its_own_limits_harmlessly() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    budget = make_budget(store, clock)
    await learn(budget, 6000, 600_000)
    await budget.observe(200, limits(12_000, 600_000), None)  # the server raised it
    clock.now += 2 * LIMITS_PICKUP
    await budget.acquire(1)
    assert (budget.rpm, budget.tpm) == (12_000, 600_000)
    assert await store.learned_limits(KEY) == (12_000, 600_000)


async def test_adapt_off_neither_publishes_nor_adopts() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    off = make_budget(store, clock, rpm=6000, adapt="off")
    await learn(off, 600, 1000)
    assert await store.learned_limits(KEY) == (None, None)
    await learn(make_budget(store, clock), 600, 1000)  # an auto budget of the fleet publishes
    clock.now += 2 * LIMITS_PICKUP
    await off.acquire(1)
    assert (off.rpm, off.tpm) == (6000, None)


async def test_a_published_limit_never_raises_a_given_one() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    await learn(make_budget(store, clock), 6000, 5000)
    b = make_budget(store, clock, tpm=1000)  # --tpm 1000: not auto, the rpm is left to the fleet
    await b.acquire(1)
    assert (b.rpm, b.tpm) == (6000, 1000)
    await make_budget(store, clock).observe(200, limits(6000, 500), None)  # then the server says 500
    clock.now += LIMITS_PICKUP
    await b.acquire(1)
    assert b.tpm == 500


async def test_two_processes_share_learned_limits_through_redis(redis_url: str) -> None:
    clock = FakeClock()
    stores = [SharedStore(RedisStore(redis_url, clock=clock), clock=clock, sleep=clock.sleep) for _ in range(2)]
    try:
        a, b = (make_budget(store, clock) for store in stores)
        await learn(a, 6000, 600_000)
        assert await stores[1].learned_limits(KEY) == (6000, 600_000)
        with anyio.fail_after(1):
            await b.acquire(10)
            await b.acquire(10)
        assert b.headers_seen is None and (b.rpm, b.tpm) == (6000, 600_000)
        await a.observe(200, limits(3000, 600_000), None)
        clock.now += LIMITS_PICKUP
        await b.acquire(10)
        assert b.rpm == 3000
    finally:
        for store in stores:
            await store.close()


def test_a_process_in_auto_mode_publishes_what_it_learns_under_the_budgets_hash(
        tmp_path: Path, simulator: Callable[..., Simulator], redis_url: str) -> None:
    sim = simulator(rpm=3000, tpm=400_000, latency_ms=5)
    src = write_jsonl(tmp_path / "job.jsonl", chat_jobs(20))
    done = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl", "--shared", redis_url), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    client = redis.Redis.from_url(redis_url)
    try:
        budget = RedisStore.budget_key(namespace(PLANTED_KEY, sim.base_url, MODEL))
        assert [float(value) for value in client.hmget(budget, ["lrpm", "ltpm"])] == [3000.0, 400_000.0]
        keys = list(client.scan_iter())
        blobs = keys + [value for key in keys if client.type(key) == b"hash" for value in client.hvals(key)]
        assert not [blob for blob in blobs if PLANTED_KEY[-12:].encode() in blob]  # nor the whole key
    finally:
        client.close()
