"""The dual budget: requests per minute and tokens per minute, paced smoothly, with a shared cooldown.

Each budget is an aiolimiter leaky bucket sized to hold about `burst_seconds` of traffic, so a run starts
at its rate instead of with a minute-sized burst. A request is charged its estimated tokens before it is
sent; `settle` charges or refunds the difference once the real usage is known. A request larger than the
bucket is let through when the bucket is empty and leaves the rest as debt, so it is neither starved nor
rejected. `pause` makes every caller wait (a 429 slows the whole run, not one request).
"""

from __future__ import annotations

import time

import anyio
from aiolimiter import AsyncLimiter


class _Bucket(AsyncLimiter):
    """An `AsyncLimiter` that can also be charged or refunded after the fact."""

    __slots__ = ()

    def adjust(self, amount: float) -> None:
        """Add `amount` to the level (a charge), or take it off (a refund, never below empty)."""
        self._leak()
        self._level = max(0.0, self._level + amount)
        if amount < 0:
            self._wake_next()

    def fill(self) -> None:
        """Mark the bucket full, so traffic resumes at the paced rate rather than in a burst."""
        self._leak()
        self._level = max(self._level, float(self.max_rate))


class RateLimiter:
    """Gate for every attempt: wait out any cooldown, then one request and its tokens.

    Keep `burst_seconds` below the server's enforcement window (OpenAI and the simulator: about a second)
    so that jitter between our send and its arrival never pushes the server over.
    """

    __slots__ = ("_cooldown_until", "_requests", "_tokens", "rpm", "tpm")

    def __init__(self, rpm: float | None = None, tpm: float | None = None, burst_seconds: float = 1.0) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._requests = _bucket(rpm, burst_seconds)
        self._tokens = _bucket(tpm, burst_seconds)
        self._cooldown_until = 0.0

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of `tokens` estimated tokens may be sent, and charge it."""
        await self._wait_cooldown()
        if self._requests is not None:
            await self._requests.acquire(1)
        if self._tokens is not None and tokens > 0:
            first = min(float(tokens), self._tokens.max_rate)
            await self._tokens.acquire(first)
            if tokens > first:
                self._tokens.adjust(tokens - first)
        if self._cooldown_until > time.monotonic():
            # a 429 came in while this request waited for capacity: honour it too
            await self._wait_cooldown()

    def settle(self, delta_tokens: int) -> None:
        """Charge (`delta_tokens` > 0) or refund (< 0) the difference between the estimate and the real cost."""
        if self._tokens is not None and delta_tokens:
            self._tokens.adjust(delta_tokens)

    def pause(self, seconds: float) -> None:
        """Hold every caller for `seconds` from now (a shared cooldown after a 429)."""
        until = time.monotonic() + seconds
        if until > self._cooldown_until:
            self._cooldown_until = until
            for bucket in (self._requests, self._tokens):
                if bucket is not None:
                    bucket.fill()

    @property
    def cooldown_remaining(self) -> float:
        """Seconds left of the current cooldown (0 when none)."""
        return max(0.0, self._cooldown_until - time.monotonic())

    async def _wait_cooldown(self) -> None:
        while (wait := self._cooldown_until - time.monotonic()) > 0:
            await anyio.sleep(wait)


def _bucket(per_minute: float | None, burst_seconds: float) -> _Bucket | None:
    if not per_minute:
        return None
    per_second = per_minute / 60.0
    # a bucket holds at least one unit, so a slow budget (say 10 rpm) still lets one request through
    period = max(burst_seconds, 1.0 / per_second)
    return _Bucket(per_second * period, period)
