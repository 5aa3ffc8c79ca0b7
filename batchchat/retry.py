"""The retry policy: one small function over tenacity, entered only after a first failure.

A request's first attempt runs outside tenacity, so the success path costs nothing; a `Retryable` outcome
hands over to `AsyncRetrying`, which waits (the server's Retry-After when it gave one, else capped
exponential backoff with jitter), tries again, and stops at `max_attempts` or the request's deadline.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt, stop_before_delay

from batchchat.transport import Outcome, Retryable


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: attempts, a deadline for all of them, and the backoff curve."""

    max_attempts: int = 5
    deadline: float = 900.0  # seconds, first attempt to last, per request
    backoff_base: float = 0.5  # first backoff; doubles each time (with jitter)
    backoff_max: float = 8.0
    max_wait: float = 60.0  # cap on any one wait, a server's Retry-After included

    def wait_for(self, state: RetryCallState) -> float:
        """Seconds to wait before the next attempt."""
        outcome = state.outcome.result() if state.outcome else None
        if isinstance(outcome, Retryable) and outcome.retry_after is not None:
            wait = outcome.retry_after
        else:
            exponent = state.attempt_number - 1
            wait = min(self.backoff_max, self.backoff_base * 2**exponent) * random.uniform(0.75, 1.0)
        return min(wait, self.max_wait)


def _is_retryable(outcome: Outcome) -> bool:
    return isinstance(outcome, Retryable)


def _last_outcome(state: RetryCallState) -> Outcome:
    assert state.outcome is not None
    return state.outcome.result()


async def retry_after_failure(
    first: Outcome, attempt: Callable[[], Awaitable[Outcome]], policy: RetryPolicy, elapsed: float
) -> Outcome:
    """Given the `first` outcome, retry `attempt` under `policy` until it is not retryable or time is up.

    `elapsed` is the time the first attempt already took, counted against the deadline.
    """
    if not isinstance(first, Retryable) or policy.max_attempts <= 1:
        return first
    pending: list[Outcome] = [first]

    async def call() -> Outcome:
        # tenacity's attempt 1 is the one already made: replay its outcome instead of sending again
        return pending.pop() if pending else await attempt()

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts) | stop_before_delay(max(0.0, policy.deadline - elapsed)),
        wait=policy.wait_for,
        retry=retry_if_result(_is_retryable),
        retry_error_callback=_last_outcome,
        sleep=anyio.sleep,
    )
    return await retrying(call)
