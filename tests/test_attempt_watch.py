"""The attempt timeout (#22 item 4): it follows the latency the server shows, never cuts a slow start, gives a hung
attempt up so that it is retried, and names the requests that wait. A fake clock: nothing here sleeps."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchchat.http.outcomes import Outcome, Retryable, Success
from batchchat.online.attempt_watch import (
    ATTEMPT_FLOOR,
    ATTEMPT_MULTIPLE,
    MIN_ANSWERS,
    STALL_UNKNOWN,
    AttemptWatch,
    attempt_timeout,
)
from batchchat.report.counters import Counters, LatencyHistogram
from batchchat.report.progress import Progress

PATH = "/v1/chat/completions"
OK = Success(200, {}, b"{}", None, {})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Server:
    """A sender whose answers come when the test says (`answer(id)`); the others hang."""

    def __init__(self) -> None:
        self.events: dict[bytes, anyio.Event] = {}
        self.sent: list[bytes] = []

    async def send(self, path: str, content: bytes) -> Outcome:
        self.sent.append(content)
        event = self.events.setdefault(content, anyio.Event())
        await event.wait()
        return OK

    def answer(self, content: bytes) -> None:
        self.events.setdefault(content, anyio.Event()).set()

    async def aclose(self) -> None:
        pass


def answered(count: int, seconds: float) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for _ in range(count):
        histogram.add(seconds)
    return histogram


async def settle() -> None:
    for _ in range(5):  # let woken tasks run: loop turns, not time
        await asyncio.sleep(0)


async def in_flight(watch: AttemptWatch, n: int) -> None:
    while len(watch.waiting) < n:
        await asyncio.sleep(0)


def test_the_attempt_timeout_follows_the_p99_within_its_bounds() -> None:
    assert attempt_timeout(answered(MIN_ANSWERS - 1, 1.0), 600.0) is None  # a start: --timeout only
    assert attempt_timeout(answered(MIN_ANSWERS, 0.02), 600.0) == ATTEMPT_FLOOR  # fast server: the floor
    assert attempt_timeout(answered(100, 5.0), 600.0) == pytest.approx(ATTEMPT_MULTIPLE * 5.0, rel=0.01)
    assert attempt_timeout(answered(100, 200.0), 600.0) is None  # 4 x p99 past --timeout: --timeout's work


@given(st.lists(st.floats(0.001, 120.0), min_size=MIN_ANSWERS, max_size=200), st.floats(1.0, 900.0))
def test_the_attempt_timeout_never_cuts_what_most_answers_take(latencies: list[float], ceiling: float) -> None:
    histogram = LatencyHistogram()
    for seconds in latencies:
        histogram.add(seconds)
    limit = attempt_timeout(histogram, ceiling)
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    if limit is None:
        assert max(ATTEMPT_FLOOR, ATTEMPT_MULTIPLE * p99) >= ceiling * 0.99
    else:
        assert ATTEMPT_FLOOR <= limit < ceiling
        assert limit >= ATTEMPT_MULTIPLE * p99 * 0.99  # 4x the p99 at least, within the histogram's 0.5%


async def run_attempts(watch: AttemptWatch, ids: list[str], body: Callable[[], Awaitable[None]],
                       cuts: int = 0) -> dict[str, Outcome]:
    results: dict[str, Outcome] = {}

    async def one(custom_id: str) -> None:
        results[custom_id] = await watch.attempt(custom_id, cuts).send(PATH, custom_id.encode())

    async with anyio.create_task_group() as group:
        for custom_id in ids:
            group.start_soon(one, custom_id)
        await in_flight(watch, len(ids))
        await body()
    return results


async def test_a_hung_attempt_is_given_up_at_the_timeout_and_not_before() -> None:
    clock, server, said = Clock(), Server(), []
    watch = AttemptWatch(server, answered(100, 1.0), 600.0, said.append, clock=clock)  # p99 1 s: timeout 10 s

    async def body() -> None:
        server.answer(b"fast")
        await settle()
        clock.now += ATTEMPT_FLOOR - 0.1
        assert watch.sweep() == [] and len(watch.waiting) == 1  # not yet
        clock.now += 0.2
        assert [a.custom_id for a in watch.sweep()] == ["hung"]
        await settle()

    results = await run_attempts(watch, ["fast", "hung"], body)
    assert results["fast"] is OK
    hung = results["hung"]
    assert isinstance(hung, Retryable) and hung.reason == "timeout" and hung.status is None
    assert "no answer within 10 s (the attempt timeout)" in hung.message
    assert not watch.waiting and watch.given_up == 1
    assert len(said) == 1 and "1 attempts got no answer within the attempt timeout (10 s" in said[0]
    assert ": hung; retrying them" in said[0]


async def test_a_slow_start_is_never_cut() -> None:
    clock, server = Clock(), Server()
    watch = AttemptWatch(server, answered(MIN_ANSWERS - 1, 0.01), 600.0, clock=clock)

    async def body() -> None:
        for _ in range(10):
            clock.now += 550.0
            assert watch.sweep() == []  # too few answers to judge: only --timeout (the client's own) applies
        server.answer(b"slow")
        await settle()

    assert (await run_attempts(watch, ["slow"], body))["slow"] is OK


async def test_a_request_given_up_before_gets_twice_as_long() -> None:
    clock, server = Clock(), Server()
    watch = AttemptWatch(server, answered(100, 5.0), 600.0, clock=clock)  # p99 5 s: timeout 20 s
    results: dict[str, Outcome] = {}

    async def one(custom_id: str, cuts: int) -> None:
        results[custom_id] = await watch.attempt(custom_id, cuts).send(PATH, custom_id.encode())

    async with anyio.create_task_group() as group:
        group.start_soon(one, "first", 0)
        group.start_soon(one, "again", 1)  # its first attempt was given up: 40 s now
        await in_flight(watch, 2)
        clock.now += 30.0
        assert [a.custom_id for a in watch.sweep()] == ["first"]  # 30 s: past 20, within its own 40
        await settle()
        clock.now += 15.0
        assert [a.custom_id for a in watch.sweep()] == ["again"]
        await settle()
    assert all(isinstance(results[k], Retryable) for k in ("first", "again"))
    assert "within 40 s" in results["again"].message  # type: ignore[union-attr]


async def test_a_run_that_stops_cancels_a_given_up_attempt_all_the_same() -> None:
    clock, server = Clock(), Server()
    watch = AttemptWatch(server, answered(100, 1.0), 600.0, clock=clock)
    finished: list[Any] = []

    async def one() -> None:
        finished.append(await watch.attempt("r").send(PATH, b"r"))
        await anyio.lowlevel.checkpoint()  # the worker's next await: the stop must reach it
        finished.append("went on")

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(one)
            await in_flight(watch, 1)
            clock.now += 60.0
            watch.sweep()  # given up ...
            scope.cancel()  # ... as the run stops: the stop wins
            await settle()
    assert "went on" not in finished and not watch.waiting  # the give-up never swallows the run's cancellation


async def test_the_waiting_requests_are_named_oldest_first() -> None:
    clock, server = Clock(), Server()
    watch = AttemptWatch(server, LatencyHistogram(), 600.0, clock=clock)

    async def body() -> None:
        assert watch.describe_waiting() is None
        clock.now += STALL_UNKNOWN + 1  # before any answer: named after a minute
        assert watch.describe_waiting() == "5 waiting > 1m00s: r0 1m01s, r1 1m01s, r2 1m01s +2 more"
        for custom_id in (b"r0", b"r1", b"r2", b"r3"):
            server.answer(custom_id)
        await settle()
        assert watch.describe_waiting() == "1 waiting > 1m00s: r4 1m01s"
        server.answer(b"r4")

    await run_attempts(watch, [f"r{i}" for i in range(5)], body)
    assert watch.describe_waiting() is None


async def test_a_cancellation_that_meets_a_give_up_goes_on() -> None:
    clock, server = Clock(), Server()
    watch = AttemptWatch(server, answered(100, 1.0), 600.0, clock=clock)
    task = asyncio.ensure_future(watch.attempt("r").send(PATH, b"r"))
    await in_flight(watch, 1)
    clock.now += 60.0
    watch.sweep()  # the give-up cancels the task once ...
    task.cancel()  # ... and its owner too, at the same moment: the owner's cancellation must not be swallowed
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not watch.waiting


def test_the_log_line_and_the_bar_name_who_is_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # too narrow for the bar's own line: said above the bar
    waiting = "3 waiting > 5s: r1 9s, r2 9s, r3 9s"
    counters = Counters(total=10, succeeded=7)
    counters.in_flight = 3
    log = io.StringIO()
    Progress(counters, "log", stream=log, waiting=lambda: waiting).refresh()
    assert f"3 in flight, {waiting}, 0 retries" in log.getvalue()
    screen = io.StringIO()
    bar = Progress(counters, "bar", stream=screen, waiting=lambda: waiting)
    bar._start_bar()
    bar.refresh()
    bar.refresh()  # said once, not on every refresh
    bar.close()
    assert screen.getvalue().count(f"batchchat: {waiting}") == 1, screen.getvalue()
    quiet = io.StringIO()
    Progress(counters, "log", stream=quiet, waiting=lambda: None).refresh()
    assert "waiting" not in quiet.getvalue()
