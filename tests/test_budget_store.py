"""Both budget stores through the same tests: `LocalStore` (the pure functions in process) and `RedisStore` (the
same arithmetic as Lua in a real redis-server), each driven by a fake clock (RedisStore's test seam).

"Two processes" are two store objects: for Redis two clients on one server; in process the one store (what a
second task of the same process sees). Then the same random sequences through both give the same answers.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable

import pytest

from batchchat.pacing.bucket import Limits
from batchchat.pacing.redis_store import RedisStore, namespace
from batchchat.pacing.store import BudgetStore, LocalStore

KEY = namespace("sk-test-0123456789abcdef", "http://127.0.0.1:1/v1", "gpt-4o-mini")
LIMITS = Limits(rpm=600, tpm=60_000)  # 10 requests/s, capacity 5; 1,000 tokens/s, capacity 500
TTL = 30.0


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Factory = Callable[[], BudgetStore]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["local", "redis"])
async def make_store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Factory]:
    """A factory of stores that share budgets (another process's view of them), all on the fake clock."""
    if request.param == "local":
        local = LocalStore(clock, process_ttl=TTL)
        yield lambda: local
        return
    url = request.getfixturevalue("redis_url")
    made: list[RedisStore] = []

    def make() -> BudgetStore:
        made.append(RedisStore(url, clock=clock, process_ttl=TTL))
        return made[-1]

    yield make
    for store in made:
        await store.close()


async def test_paced_from_the_first_request(make_store: Factory, clock: FakeClock) -> None:
    store = make_store()
    assert await store.reserve(KEY, LIMITS, 10) == 0.0
    assert await store.reserve(KEY, LIMITS, 10) == pytest.approx(0.1)
    clock.advance(0.05)
    assert await store.reserve(KEY, LIMITS, 10) == pytest.approx(0.05)
    clock.advance(0.05)
    assert await store.reserve(KEY, LIMITS, 10) == 0.0


async def test_two_processes_draw_on_one_budget(make_store: Factory, clock: FakeClock) -> None:
    a, b = make_store(), make_store()
    assert await a.reserve(KEY, LIMITS, 10) == 0.0
    assert await b.reserve(KEY, LIMITS, 10) == pytest.approx(0.1)  # a's request counts for b
    other = namespace("sk-test-0123456789abcdef", "http://127.0.0.1:1/v1", "text-embedding-3-small")
    assert await b.reserve(other, LIMITS, 10) == 0.0  # another model's budget is its own


async def test_a_refund_reaches_every_process(make_store: Factory, clock: FakeClock) -> None:
    tokens_only = Limits(tpm=60_000)
    a, b = make_store(), make_store()
    assert await a.reserve(KEY, tokens_only, 400) == 0.0  # primed to 100, now full
    assert await b.reserve(KEY, tokens_only, 300) == pytest.approx(0.3)
    await a.adjust(KEY, tokens_only, -300)  # a's answer used 100 tokens, not 400
    assert await b.reserve(KEY, tokens_only, 300) == 0.0
    await a.adjust(KEY, tokens_only, 1_000)  # a charge: debt
    snap = await b.snapshot(KEY, tokens_only)
    assert snap.tokens == pytest.approx(1_500.0) and snap.cooldown == 0.0


async def test_a_refused_attempts_request_is_given_back(make_store: Factory, clock: FakeClock) -> None:
    a, b = make_store(), make_store()
    await a.reserve(KEY, LIMITS, 0)
    assert await b.reserve(KEY, LIMITS, 0) == pytest.approx(0.1)
    await a.adjust_requests(KEY, LIMITS, -1)
    assert await b.reserve(KEY, LIMITS, 0) == 0.0
    assert (await a.snapshot(KEY, LIMITS)).requests == pytest.approx(5.0)


async def test_a_cooldown_holds_every_process(make_store: Factory, clock: FakeClock) -> None:
    a, b = make_store(), make_store()
    await a.reserve(KEY, LIMITS, 10)
    await a.pause(KEY, LIMITS, 2.0)
    assert (await b.snapshot(KEY, LIMITS)).cooldown == pytest.approx(2.0)
    assert await b.reserve(KEY, LIMITS, 10) == pytest.approx(2.0)  # the first just fits at the cooldown's end
    clock.advance(2.0)
    assert await b.reserve(KEY, LIMITS, 10) == 0.0
    assert await a.reserve(KEY, LIMITS, 10) == pytest.approx(0.1)  # then paced, not a burst


async def test_learned_limits_are_shared(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    assert await b.learned_limits(KEY) == (None, None)
    await a.publish_limits(KEY, 500.0, None)
    assert await b.learned_limits(KEY) == (500.0, None)
    await b.publish_limits(KEY, None, 150_000.0)
    assert await a.learned_limits(KEY) == (500.0, 150_000.0)


async def test_processes_on_a_budget_with_their_last_minute(make_store: Factory, clock: FakeClock) -> None:
    a, b = make_store(), make_store()
    await a.register(KEY, "host1-101", {"host": "host1", "pid": 101})
    for _ in range(3):
        clock.advance(1.0)
        assert await a.reserve(KEY, LIMITS, 20) == 0.0
    await a.adjust(KEY, LIMITS, -15)
    await a.heartbeat(KEY, "host1-101")
    await b.register(KEY, "host2-202", {"host": "host2", "pid": 202})
    listed = {p.process_id: p for p in await b.processes(KEY)}
    assert set(listed) == {"host1-101", "host2-202"}
    first = listed["host1-101"]
    assert dict(first.info) == {"host": "host1", "pid": 101}
    assert (first.requests, first.tokens) == (3.0, 45.0)
    assert first.age == pytest.approx(0.0)
    # spending older than a minute is not counted
    clock.advance(61.0)
    await a.heartbeat(KEY, "host1-101")
    assert [(p.process_id, p.requests) for p in await a.processes(KEY)] == [("host1-101", 0.0)]
    # a process that stops sending heartbeats drops off the list
    clock.advance(TTL / 2)
    await b.heartbeat(KEY, "host2-202")
    clock.advance(TTL / 2 + 1.0)
    assert [p.process_id for p in await a.processes(KEY)] == ["host2-202"]
    with pytest.raises(KeyError):
        await a.heartbeat(KEY, "never-registered")


async def test_spending_cap(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    assert await a.reserve_spend("job-cap", 1.0, 0.4)
    assert await b.reserve_spend("job-cap", 1.0, 0.4)
    assert not await a.reserve_spend("job-cap", 1.0, 0.4)  # 1.2 > 1.0: refused, nothing reserved
    assert await a.cap_usage("job-cap") == (0.0, pytest.approx(0.8))
    await b.settle_spend("job-cap", 0.4, 0.1)  # cost less than reserved: 0.3 back
    assert await a.cap_usage("job-cap") == (pytest.approx(0.1), pytest.approx(0.4))
    assert await a.reserve_spend("job-cap", 1.0, 0.5)  # 0.1 spent + 0.4 + 0.5 reserved = 1.0
    assert not await b.reserve_spend("job-cap", 1.0, 0.01)
    await a.settle_spend("job-cap", 0.4, 0.45)  # cost more than reserved
    assert await b.cap_usage("job-cap") == (pytest.approx(0.55), pytest.approx(0.5))
    await b.settle_spend("job-cap", 0.5, 0.0)  # released: not billed
    assert await a.cap_usage("job-cap") == (pytest.approx(0.55), pytest.approx(0.0))
    assert await b.cap_usage("another-cap") == (0.0, 0.0)


# the equivalence of the two stores: random sequences of every budget operation, explicit times

LIMIT_CHOICES = [
    Limits(rpm=600, tpm=60_000),
    Limits(rpm=60, tpm=6_000, burst_seconds=1.0),
    Limits(rpm=3_000, tpm=None),
    Limits(rpm=None, tpm=150_000, burst_seconds=0.25),
    Limits(rpm=7.5, tpm=333.3),
    Limits(),
]


async def _random_run(store: BudgetStore, clock: FakeClock, seed: int, steps: int) -> list[float]:
    rng = random.Random(seed)
    limits = LIMIT_CHOICES[0]
    key = f"{KEY}-{seed}"
    out: list[float] = []
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.03:
            limits = rng.choice(LIMIT_CHOICES)  # limits change mid-run (learned from headers)
        step = rng.choice([0.0, 0.0, rng.random() * 0.05, rng.random() * 0.5, -rng.random() * 0.01])
        clock.advance(step)
        op = rng.random()
        if op < 0.55:
            out.append(await store.reserve(key, limits, rng.choice([0, 1, 50, 333, rng.randint(0, 20_000)])))
        elif op < 0.7:
            await store.adjust(key, limits, rng.randint(-800, 800))
        elif op < 0.78:
            await store.adjust_requests(key, limits, rng.choice([-1, 1]))
        elif op < 0.83:
            await store.pause(key, limits, rng.random() * 2.0)
        else:
            snap = await store.snapshot(key, limits)
            out.extend([snap.requests, snap.tokens, snap.cooldown])
    return out


@pytest.mark.parametrize("seed", range(4))
async def test_local_and_redis_give_the_same_answers(redis_url: str, seed: int) -> None:
    local_clock, redis_clock = FakeClock(5_000.0), FakeClock(5_000.0)
    local = LocalStore(local_clock)
    shared = RedisStore(redis_url, clock=redis_clock)
    try:
        expected = await _random_run(local, local_clock, seed, 300)
        got = await _random_run(shared, redis_clock, seed, 300)
    finally:
        await shared.close()
    assert len(got) == len(expected)
    assert sum(1 for x in expected if x > 0) > 20  # the sequences do wait, hold debt and cooldowns
    for i, (x, y) in enumerate(zip(expected, got, strict=True)):
        assert abs(x - y) <= 1e-9, f"answer {i}: local {x!r}, redis {y!r}"
