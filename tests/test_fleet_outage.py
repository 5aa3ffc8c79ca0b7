"""`SharedStore`'s outage policy against a real redis-server that is stopped and started again, on a fake clock:
dispatch pauses (nothing is admitted without the shared budget), what must reach the budget is replayed when
Redis is back, the run stops after `--shared-timeout` (exit 8), or falls back to local budgets loudly."""

from __future__ import annotations

import math
from collections.abc import Callable

import anyio
import pytest
from redis_server import RedisServer

from batchchat.errors import ExitCode
from batchchat.pacing.bucket import Limits
from batchchat.pacing.redis_store import RedisStore
from batchchat.pacing.shared import LEASE_TTL, RETRY_FIRST, SharedStore, SharedStoreLost, lease_size

KEY = "0123abcd" * 8
LIMITS = Limits(rpm=600.0, tpm=60_000.0, burst_seconds=0.5)  # 10 requests/s, 1,000 tokens/s; 5 / 500 held


class FakeTime:
    """A clock that only moves when someone sleeps; `on_sleep` runs on each sleep (to stage an outage)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[int], None] = lambda count: None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.sleeps))
        await anyio.lowlevel.checkpoint()


def _store(redis_url: str, fake: FakeTime, said: list[str], **options: object) -> SharedStore:
    inner = RedisStore(redis_url, clock=fake.clock, socket_timeout=2.0)
    return SharedStore(inner, echo=said.append, clock=fake.clock, sleep=fake.sleep, **options)  # type: ignore[arg-type]


async def test_an_outage_pauses_admission_and_what_happened_meanwhile_is_replayed(
        redis_url: str, redis_server: RedisServer) -> None:
    fake, said = FakeTime(), []
    store = _store(redis_url, fake, said, timeout=30.0)
    try:
        assert await store.reserve(KEY, LIMITS, 100) == 0.0
        redis_server.stop()
        # in-flight requests finish while Redis is away: their settles and a 429's cooldown are kept
        await store.adjust(KEY, LIMITS, 250.0)
        await store.adjust_requests(KEY, LIMITS, -1.0)
        await store.pause(KEY, LIMITS, 20.0)
        assert store.state == "down" and "dispatch paused" in said[0] and "then stop (exit 8)" in said[0]
        snap = await store.snapshot(KEY, LIMITS)  # the cooldown kept here; levels with nothing beyond to charge
        assert (snap.requests, snap.tokens, snap.cooldown) == (math.inf, math.inf, 20.0)
        fake.on_sleep = lambda count: redis_server.start() if count == 3 else None  # back on the 3rd retry
        wait = await store.reserve(KEY, LIMITS, 100)  # blocks through the outage, never admits without Redis
        assert fake.sleeps == [RETRY_FIRST, RETRY_FIRST * 2, RETRY_FIRST * 4]
        assert "back after 0.7 s: dispatch resumes" in said[-1] and store.state == "up" and store.outages == 1
        # Redis came back empty: the replayed cooldown holds the budget (20 s from the pause, 0.7 s of it gone;
        # the budget resumes paced: primed afresh, the first request just fits at the cooldown's end)
        assert wait == pytest.approx(19.3)
        after = await store.inner.snapshot(KEY, LIMITS)
        assert after.cooldown == pytest.approx(19.3)
    finally:
        redis_server.start()
        await store.close()


async def test_settles_made_during_an_outage_reach_the_shared_budget(redis_url: str, redis_server: RedisServer) -> None:
    fake, said = FakeTime(), []
    store = _store(redis_url, fake, said, timeout=30.0)
    tokens_only = Limits(rpm=None, tpm=60_000.0)  # 1,000 tokens/s, 500 held
    try:
        assert await store.reserve(KEY, tokens_only, 100) == 0.0
        redis_server.stop()
        await store.adjust(KEY, tokens_only, 300.0)  # answers that used more than their estimate...
        await store.adjust(KEY, tokens_only, 400.0)  # ...are charged once Redis is back, summed
        fake.on_sleep = lambda count: redis_server.start() if count == 1 else None
        wait = await store.reserve(KEY, tokens_only, 100)
        # Redis restarted empty: the replayed 700 tokens are its budget's level, so the next request waits
        assert (await store.inner.snapshot(KEY, tokens_only)).tokens == pytest.approx(700.0)
        assert wait == pytest.approx((700.0 + 100.0 - 500.0) / 1000.0)
    finally:
        redis_server.start()
        await store.close()


async def test_an_outage_past_the_timeout_stops_with_exit_8(redis_url: str, redis_server: RedisServer) -> None:
    fake, said = FakeTime(), []
    store = _store(redis_url, fake, said, timeout=10.0)
    try:
        assert await store.reserve(KEY, LIMITS, 100) == 0.0
        redis_server.stop()
        start = fake.now
        with pytest.raises(SharedStoreLost) as lost:
            await store.reserve(KEY, LIMITS, 100)
        assert lost.value.exit_code == ExitCode.SHARED_STORE_LOST == 8
        assert fake.now - start == pytest.approx(10.0)  # retried until the timeout, not a moment longer
        assert max(fake.sleeps) <= 2.0 and len(fake.sleeps) > 5  # backoff capped: retried often
        assert "unreachable for 10 s (--shared-timeout)" in str(lost.value) and "--shared-fallback local" in str(
            lost.value)
        with pytest.raises(SharedStoreLost):  # every later admission (a retry in a worker) stops too
            await store.reserve(KEY, LIMITS, 1)
    finally:
        redis_server.start()
        await store.close()


async def test_fallback_local_goes_on_loudly_and_returns_to_redis(redis_url: str, redis_server: RedisServer) -> None:
    fake, said = FakeTime(), []
    store = _store(redis_url, fake, said, timeout=3.0, fallback="local")
    try:
        assert await store.reserve(KEY, LIMITS, 100) == 0.0
        redis_server.stop()
        assert await store.reserve(KEY, LIMITS, 100) == 0.0  # after 3 s: a local budget, primed (paced)
        assert store.state == "local" and "then fall back to local budgets" in said[0]
        assert "WARNING" in said[-1] and "MAY EXCEED THE LIMIT" in said[-1]
        waits = [await store.reserve(KEY, LIMITS, 0) for _ in range(3)]
        assert waits[0] > 0.0  # the local budget paces: no burst of the whole limit
        redis_server.start()
        fake.now += 5.0  # the next probe is due
        await store.reserve(KEY, LIMITS, 0)
        assert store.state == "up" and "budgets are shared again" in said[-1]
    finally:
        redis_server.start()
        await store.close()


async def test_waiters_share_one_reconnection_loop(redis_url: str, redis_server: RedisServer) -> None:
    fake, said = FakeTime(), []
    store = _store(redis_url, fake, said, timeout=60.0)
    try:
        await store.reserve(KEY, Limits(), 0)
        redis_server.stop()
        fake.on_sleep = lambda count: redis_server.start() if count == 4 else None
        results: list[float] = []

        async def reserve() -> None:
            results.append(await store.reserve(KEY, Limits(), 0))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(reserve)
        assert results == [0.0] * 20 and len(fake.sleeps) == 4  # one loop retried for all twenty
        assert sum("unreachable" in line for line in said) == 1
    finally:
        redis_server.start()
        await store.close()


async def test_a_lease_serves_requests_without_a_round_trip_and_what_is_unused_goes_back(
        redis_url: str, redis_server: RedisServer) -> None:
    fake, said = FakeTime(), []
    store = _store(redis_url, fake, said, timeout=30.0)
    big = Limits(rpm=60_000.0, tpm=None)  # 1,000 requests/s, 500 held: a lease of 16 is 3% of its burst
    assert lease_size(big, 0) == 16 and lease_size(LIMITS, 100) == 1  # 6,000 RPM and less: no lease
    assert lease_size(Limits(rpm=None, tpm=60_000_000.0), 10_000) == 2  # tokens bound it too
    try:
        assert await store.reserve(KEY, big, 0) == 0.0
        assert (await store.inner.snapshot(KEY, big)).requests == pytest.approx(500 + 15)  # primed, +16
        redis_server.stop()
        for _ in range(15):  # served from the lease: no round trip (Redis is not even there)
            assert await store.reserve(KEY, big, 0) == 0.0
        assert store.state == "up" and said == []
        fake.on_sleep = lambda count: redis_server.start() if count == 1 else None
        assert await store.reserve(KEY, big, 0) == 0.0  # the lease is spent: the shared store again
        assert store.outages == 1 and store.state == "up"
        level = (await store.inner.snapshot(KEY, big)).requests  # Redis came back empty: primed again, +16
        assert level == pytest.approx(515.0)
        fake.now += LEASE_TTL  # the 15 left unused go back when the lease expires, and a new lease is taken
        assert await store.reserve(KEY, big, 0) == 0.0
        assert (await store.inner.snapshot(KEY, big)).requests == pytest.approx(515.0 - 250.0 - 15.0 + 16.0)
        await store.pause(KEY, big, 1.0)  # a 429 gives the lease back: nothing more goes on it
        assert KEY not in store._leases
    finally:
        redis_server.start()
        await store.close()
