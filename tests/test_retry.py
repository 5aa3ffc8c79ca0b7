"""The retry policy: what it waits, when it stops, and that the first attempt is never repeated."""

from __future__ import annotations

import pytest
from tenacity import RetryCallState

from batchchat.config.settings import RetryPolicy
from batchchat.http.outcomes import Failed, Outcome, Retryable, Success
from batchchat.http.retry import backoff_wait, retry_after_failure


def _state(attempt_number: int, outcome: Outcome) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt_number
    state.set_result(outcome)
    return state


def test_wait_obeys_retry_after_and_caps_it() -> None:
    policy = RetryPolicy(max_wait=5.0)
    assert backoff_wait(policy, _state(1, Retryable("rate_limited", "", 429, retry_after=2.5))) == 2.5
    assert backoff_wait(policy, _state(1, Retryable("rate_limited", "", 429, retry_after=99))) == 5.0


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 0.375, 0.5), (2, 0.75, 1.0), (3, 1.5, 2.0), (9, 6.0, 8.0)])
def test_backoff_doubles_with_jitter_up_to_the_cap(attempt: int, low: float, high: float) -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=8.0)
    waits = [backoff_wait(policy, _state(attempt, Retryable("http_500", ""))) for _ in range(50)]
    assert all(low <= w <= high for w in waits)
    assert max(waits) - min(waits) > 0  # jittered


FAST = RetryPolicy(max_attempts=4, backoff_base=0.001, backoff_max=0.002)


async def test_retries_until_success_without_repeating_the_first_attempt() -> None:
    calls: list[int] = []
    answers = [Retryable("http_503", "x"), Success(200, {}, b"{}", None, None)]  # type: ignore[arg-type]

    async def attempt() -> Outcome:
        calls.append(1)
        return answers.pop(0)

    outcome = await retry_after_failure(Retryable("http_500", "first"), attempt, FAST, 0.0)
    assert isinstance(outcome, Success)
    assert len(calls) == 2  # attempts 2 and 3; attempt 1 was made by the caller


async def test_stops_at_max_attempts_with_the_last_outcome() -> None:
    calls: list[int] = []

    async def attempt() -> Outcome:
        calls.append(1)
        return Retryable("http_502", f"try {len(calls) + 1}")

    outcome = await retry_after_failure(Retryable("http_500", "try 1"), attempt, FAST, 0.0)
    assert isinstance(outcome, Retryable) and outcome.message == "try 4"
    assert len(calls) == 3


async def test_a_final_failure_is_not_retried() -> None:
    async def attempt() -> Outcome:
        return Failed("http_400", "bad")

    outcome = await retry_after_failure(Retryable("http_500", "x"), attempt, FAST, 0.0)
    assert isinstance(outcome, Failed)


async def test_deadline_stops_before_a_wait_that_would_pass_it() -> None:
    calls: list[int] = []

    async def attempt() -> Outcome:
        calls.append(1)
        return Retryable("http_500", "x")

    policy = RetryPolicy(max_attempts=10, deadline=1.0, backoff_base=5.0)
    outcome = await retry_after_failure(Retryable("http_500", "x"), attempt, policy, 0.5)
    assert isinstance(outcome, Retryable)
    assert calls == []  # the first wait (>= 3.75 s) would pass the deadline


async def test_single_attempt_policy_returns_the_first_outcome() -> None:
    async def attempt() -> Outcome:
        raise AssertionError("must not be called")

    first = Retryable("http_500", "x")
    assert await retry_after_failure(first, attempt, RetryPolicy(max_attempts=1), 0.0) is first


async def _no_sleep(seconds: float) -> None:
    """The instant-retry seam: tests never really wait out a backoff."""


async def test_the_sleep_seam_makes_backoff_instant_and_sees_every_wait() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def attempt() -> Outcome:
        return Retryable("http_500", "again")

    policy = RetryPolicy(max_attempts=4, backoff_base=1.0, backoff_max=60.0)
    await retry_after_failure(Retryable("http_500", "first"), attempt, policy, 0.0, sleep=sleep)
    assert len(waits) == 3 and 0.75 <= waits[0] <= 1.0 and 3.0 <= waits[2] <= 4.0


async def test_a_retry_whose_backoff_saw_the_run_stop_is_not_sent() -> None:
    stopping = [False]
    calls: list[int] = []

    async def sleep(seconds: float) -> None:
        stopping[0] = True  # a rejected key or a signal arrives while this request backs off

    async def attempt() -> Outcome:
        calls.append(1)
        return Retryable("http_500", "again")

    outcome = await retry_after_failure(Retryable("http_500", "first"), attempt, RetryPolicy(max_attempts=5), 0.0,
                                        stopped=lambda: stopping[0], sleep=sleep)
    assert calls == [] and isinstance(outcome, Retryable) and outcome.message == "first"


async def test_retries_go_on_while_the_run_is_not_stopping() -> None:
    calls: list[int] = []

    async def attempt() -> Outcome:
        calls.append(1)
        return Retryable("http_500", "again")

    await retry_after_failure(Retryable("http_500", "first"), attempt, RetryPolicy(max_attempts=5), 0.0,
                              stopped=lambda: False, sleep=_no_sleep)
    assert len(calls) == 4
