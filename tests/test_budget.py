"""A model's budget against each kind of server, on a fake clock: the simulator's own counters (bucket, strict
window, calendar minute) answer every request with their headers, and the budget must keep to the limit
without debt the server does not hold, refund what it disowns, give back refused attempts, and learn."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

from batchchat.config.settings import RunSettings
from batchchat.pacing.budget import Budget
from batchchat.pacing.headers import RateLimitHeaders
from batchchat.pacing.pacer import Pacer
from batchchat.pacing.store import LocalStore
from batchchat.pacing.timing import GUARD_MAX
from batchchat.simulator.limits import Limiter

MODEL = "gpt-4o-mini"


class FakeClock:
    """Time that moves only when someone sleeps (or a test moves it)."""

    def __init__(self, start: float = 1_000_020.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(1e-6, seconds)  # as a real sleep, it takes some time
        await anyio.lowlevel.checkpoint()


def make_budget(clock: FakeClock, **options: Any) -> Budget:
    return Budget(LocalStore(clock), "k", MODEL, clock=clock, sleep=clock.sleep, **options)


def headers_of(server: Limiter) -> RateLimitHeaders | None:
    raw = server.headers("key", MODEL).decode()
    fields = dict(line.split(": ", 1) for line in raw.split("\r\n") if line)
    return RateLimitHeaders.parse(fields)


class Arrivals:
    """The server's clock: ours plus each request's time on the wire (random, seeded)."""

    def __init__(self, clock: FakeClock, jitter: float = 0.0) -> None:
        self.clock = clock
        self.jitter = jitter
        self.rng = random.Random(7)
        self.delay = 0.0

    def __call__(self) -> float:
        return self.clock.now + self.delay

    def next(self) -> None:
        self.delay = self.rng.uniform(0.0, self.jitter)


async def drive(budget: Budget, server: Limiter, clock: FakeClock, n: int, tokens: int = 1,
                arrivals: Arrivals | None = None, real: float = 1.0) -> tuple[float, int]:
    """Send `n` requests through `budget` to `server`, each really costing `real` x its estimated `tokens` (the
    difference settled after its answer); (seconds taken, 429s)."""
    start = clock.now
    done = refused = 0
    while done < n:
        ticket = await budget.acquire(tokens)
        if arrivals is not None:
            arrivals.next()
        decision = server.admit("key", round(tokens * real), MODEL)
        if decision.ok:
            done += 1
            budget.answered()
            await budget.observe(200, headers_of(server), ticket)
            await budget.settle(round(tokens * real) - tokens)
        else:
            refused += 1
            await budget.refused(ticket, decision.wait)
            await budget.observe(429, headers_of(server), None)
    return clock.now - start, refused


async def test_a_calendar_minute_counter_is_not_taken_for_another_clients_spending() -> None:
    # LiteLLM: remaining counts the calendar minute, no reset header. Our own sends must not become debt.
    clock = FakeClock()
    server = Limiter(rpm=600, tpm=None, kind="minute", clock=clock)
    budget = make_budget(clock)  # auto: learns 600/min from the first answer
    elapsed, refused = await drive(budget, server, clock, 300)
    assert budget.rpm == 600
    assert elapsed <= 300 / 10 / 0.95  # at least 95% of 10 requests/s (the old sync ran at ~20%)
    assert refused <= 2


async def test_a_strict_window_is_not_taken_for_another_clients_spending() -> None:
    clock = FakeClock()
    server = Limiter(rpm=6000, tpm=None, kind="strict", clock=clock)
    budget = make_budget(clock)
    elapsed, refused = await drive(budget, server, clock, 1000)
    assert elapsed <= 1000 / 100 / 0.95
    assert refused <= 10


async def test_a_minute_scale_bucket_alone_charges_no_debt() -> None:
    # OpenAI's bucket holds a whole minute; alone, what it holds is what we sent and it leaked
    clock = FakeClock()
    server = Limiter(rpm=600, tpm=60_000, kind="bucket", window=60.0, clock=clock)
    budget = make_budget(clock)
    elapsed, refused = await drive(budget, server, clock, 300, tokens=50)
    assert elapsed <= 300 / 10 / 0.97 and refused == 0


async def test_another_clients_spending_is_charged_then_refunded_when_the_server_disowns_it() -> None:
    clock = FakeClock()
    budget = make_budget(clock, rpm=6000)  # 100/s, a bucket of 50
    ticket = await budget.acquire(1)
    # a bucket server (reset = held / rate) holding 200 though we sent 1: someone else is on the key
    await budget.observe(200, RateLimitHeaders(6000, None, 5800, None, 2.0, None), ticket)
    level = (await budget._store.snapshot("k", budget.limits)).requests
    assert level > 150
    # a moment later the server holds next to nothing: the debt goes back
    ticket = await budget.acquire(1)
    await budget.observe(200, RateLimitHeaders(6000, None, 5999, None, 0.01, None), ticket)
    assert (await budget._store.snapshot("k", budget.limits)).requests < level - 100


async def test_adapt_off_means_exactly_the_limits_given() -> None:
    clock = FakeClock()
    budget = make_budget(clock, rpm=6000, adapt="off")
    ticket = await budget.acquire(1)
    before = await budget._store.snapshot("k", budget.limits)
    await budget.observe(200, RateLimitHeaders(600, 1000, 0, 0, 60.0, 60.0), ticket)  # lower, and all spent
    assert (budget.rpm, budget.tpm) == (6000, None)
    assert await budget._store.snapshot("k", budget.limits) == before
    assert budget.too_large(5000) is None


async def test_headers_lower_a_given_limit_in_auto_mode_but_never_raise_it() -> None:
    clock = FakeClock()
    budget = make_budget(clock, rpm=100, tpm=1000)
    await budget.observe(200, RateLimitHeaders(limit_requests=10_000, limit_tokens=2_000_000), None)
    assert (budget.rpm, budget.tpm) == (100, 1000)
    await budget.observe(200, RateLimitHeaders(limit_requests=50, limit_tokens=500), None)
    assert (budget.rpm, budget.tpm) == (50, 500)


async def test_a_request_larger_than_a_learned_token_limit_is_too_large_at_once() -> None:
    clock = FakeClock()
    budget = make_budget(clock)
    assert budget.too_large(50_000) is None  # nothing known yet
    await budget.observe(200, RateLimitHeaders(limit_tokens=40_000, remaining_tokens=40_000), None)
    reason = budget.too_large(50_000)
    assert reason is not None and "40,000" in reason and MODEL in reason


async def test_a_refused_attempt_does_not_stay_charged() -> None:
    clock = FakeClock()
    budget = make_budget(clock, rpm=600, tpm=60_000)
    await budget.acquire(100)
    before = await budget._store.snapshot("k", budget.limits)
    ticket = await budget.acquire(500)  # the retry's charge: a bucket of 500 tokens, mostly debt
    await budget.refused(ticket, 0.0)  # the server refused it: it counted nothing
    after = await budget._store.snapshot("k", budget.limits)
    # pause leaves the buckets full (resume paced), but the 500 tokens of debt are gone
    assert after.tokens <= max(before.tokens, 500.0) + 1e-6
    assert after.tokens < before.tokens + 500 - 1


async def test_a_429_that_names_no_wait_waits_longer_each_time_in_a_row() -> None:
    clock = FakeClock()
    budget = make_budget(clock, rpm=60, max_wait=60.0)
    waits = []
    for _ in range(5):
        ticket = await budget.acquire(1)
        waits.append(await budget.refused(ticket, None))
    assert waits == pytest.approx([0.05, 0.8, 12.8, 60.0, 60.0])
    assert sum(waits[:4]) > 60  # a line's 5 attempts outlast a calendar minute
    budget.answered()
    ticket = await budget.acquire(1)
    assert await budget.refused(ticket, None) == pytest.approx(0.05)


async def test_a_429_teaches_nothing_lasting_the_limits_stay_the_plain_ones() -> None:
    # 429s within the limits we know (a strict window, arrival jitter) used to cut the burst and the rate for
    # good; what the budget learns must never leave it slower than its plain limits
    clock = FakeClock()
    budget = make_budget(clock, rpm=6000, burst_seconds=0.5)
    for _ in range(10):
        ticket = await budget.acquire(1)
        await budget.refused(ticket, 0.1)
        clock.now += 2.0
    assert budget.burst_seconds == 0.5
    assert budget.limits.rpm == 6000


async def test_after_a_429_the_retry_goes_when_the_server_said_not_a_turn_later() -> None:
    # 30 RPM: one request every 2 s. A 429 that says "in 20 ms" (it came a hair too early) must cost 20 ms, not
    # another 2 s turn: the pause starts the budget afresh, primed as of the cooldown's end
    clock = FakeClock()
    budget = make_budget(clock, rpm=30)
    await budget.acquire(1)
    ticket = await budget.acquire(1)  # 2 s later
    start = clock.now
    await budget.refused(ticket, 0.02)
    await budget.acquire(1)
    assert 0.02 <= clock.now - start <= 0.02 + GUARD_MAX  # the wait named, and the guard against jitter
    await budget.acquire(1)  # and the next is paced again, a turn later
    assert 2.02 <= clock.now - start <= 2.02 + 2 * GUARD_MAX


async def test_a_429_pauses_only_its_own_model() -> None:
    clock = FakeClock()
    settings = RunSettings(input="x", rpm=600, adapt="off")
    pacer = Pacer(settings, clock=clock, sleep=clock.sleep)
    slow, fast = pacer.budget("slow-model"), pacer.budget("gpt-4o-mini")
    ticket = await slow.acquire(1)
    await slow.refused(ticket, 30.0)
    start = clock.now
    await fast.acquire(1)
    assert clock.now == start  # the other model goes at once
    await slow.acquire(1)
    assert clock.now - start >= 30.0


async def test_model_limits_replace_the_default_for_the_model_named() -> None:
    settings = RunSettings(input="x", rpm=600, tpm=10_000, model_limits=(("gpt-4o-mini", 30_000, None),))
    pacer = Pacer(settings)
    assert (pacer.budget("gpt-4o-mini").rpm, pacer.budget("gpt-4o-mini").tpm) == (30_000, None)
    assert (pacer.budget("other").rpm, pacer.budget("other").tpm) == (600, 10_000)


def test_the_guard_doubles_on_a_near_miss_and_relaxes_after_answers_within_its_bounds() -> None:
    from batchchat.pacing.bucket import Limits
    from batchchat.pacing.timing import GUARD_MIN, GUARD_RELAX, GUARD_SHARE, Timing

    timing = Timing()
    for _ in range(10):
        timing.refused(0.01, 0.0)  # each came 10 ms too early
    assert timing.guard == GUARD_MAX
    slow, fast = Limits(rpm=30), Limits(rpm=30_000)
    # never more than 1% of a request's turn at the limits: 20 ms of a 2 s turn, 20 µs of a 2 ms one
    assert timing.guard_for(slow, 1) == pytest.approx(GUARD_SHARE * 2.0)
    assert timing.guard_for(fast, 1) == pytest.approx(GUARD_SHARE * 60 / 30_000)
    timing.refused(0.5, 0.0)  # a wait that is not a near miss teaches nothing
    assert timing.guard == GUARD_MAX
    for _ in range(GUARD_RELAX * 4):
        timing.answered()
    assert GUARD_MIN <= timing.guard < GUARD_MAX
