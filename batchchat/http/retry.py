"""The retry policy: one small function over tenacity, entered only after a first failure.

A request's first attempt runs outside tenacity, so the success path costs nothing; a `Retryable` outcome
hands over to `AsyncRetrying`, which waits (the server's Retry-After when it gave one, else capped
exponential backoff with jitter), tries again, and stops at `max_attempts` or the request's deadline.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt, stop_before_delay

from batchchat.config.settings import RetryPolicy
from batchchat.http.outcomes import Outcome, Retryable


def backoff_wait(policy: RetryPolicy, state: RetryCallState) -> float:
    """Seconds to wait before the next attempt: the server's Retry-After when it gave one, else capped
    exponential backoff with jitter; never more than `max_wait`."""
    outcome = state.outcome.result() if state.outcome else None
    if isinstance(outcome, Retryable) and outcome.retry_after is not None:
        wait = outcome.retry_after
    else:
        exponent = state.attempt_number - 1
        wait = min(policy.backoff_max, policy.backoff_base * 2**exponent) * random.uniform(0.75, 1.0)
    return min(wait, policy.max_wait)


def _is_retryable(outcome: Outcome) -> bool:
    return isinstance(outcome, Retryable)


def _last_outcome(state: RetryCallState) -> Outcome:
    assert state.outcome is not None
    return state.outcome.result()


async def retry_after_failure(
    first: Outcome,
    attempt: Callable[[], Awaitable[Outcome]],
    policy: RetryPolicy,
    elapsed: float,
    *,
    stopped: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
) -> Outcome:
    """Given the `first` outcome, retry `attempt` under `policy` until it is not retryable or time is up.

    `elapsed` is the time the first attempt already took, counted against the deadline. When `stopped()`
    turns true (the run is stopping: a rejected key, a signal) no further attempt is sent, even one whose
    backoff had already begun; the last outcome is returned. `sleep` is the seam that tests make instant.
    """
    if not isinstance(first, Retryable) or policy.max_attempts <= 1:
        return first
    last: list[Outcome] = [first]
    replay = [True]

    async def call() -> Outcome:
        # tenacity's attempt 1 is the one already made: replay its outcome instead of sending again
        if replay[0]:
            replay[0] = False
        elif not stopped():
            last[0] = await attempt()
        return last[0]

    retrying = AsyncRetrying(
        stop=(stop_after_attempt(policy.max_attempts) | stop_before_delay(max(0.0, policy.deadline - elapsed))
              | (lambda state: stopped())),
        wait=lambda state: backoff_wait(policy, state),
        retry=retry_if_result(_is_retryable),
        retry_error_callback=_last_outcome,
        sleep=sleep or anyio.sleep,
    )
    return await retrying(call)
