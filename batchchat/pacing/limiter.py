"""The dual budget: requests per minute and tokens per minute, paced smoothly, with a shared cooldown.

Each budget is an aiolimiter leaky bucket sized to hold about `burst_seconds` of traffic; it starts
primed, so a run is paced from its first request (no burst at all at the start), and a burst of at most
`burst_seconds` is let through only after the run has been idle. A request is charged its estimated tokens before it is
sent; `settle` charges or refunds the difference once the real usage is known. A request larger than the
bucket is let through when the bucket is empty and leaves the rest as debt, so it is neither starved nor
rejected. `pause` makes every caller wait (a 429 slows the whole run, not one request).

`observe` keeps the budgets in step with the server's `x-ratelimit-*` headers: with no limit given
(`auto`), the first answer's limits become the budgets (one request probes, the rest wait for it); on
every answer, when the server says more of the budget is spent than this client spent (another client
on the same key), the difference is charged here at once. Headers never raise a budget above the
configured one.
"""

from __future__ import annotations

import time

import anyio
from aiolimiter import AsyncLimiter

from batchchat.pacing.headers import RateLimitHeaders

PROBE_PATIENCE = 5.0  # seconds the first request of an auto-mode run is waited for alone


class _Bucket(AsyncLimiter):
    """An `AsyncLimiter` that can also be charged or refunded after the fact."""

    __slots__ = ()

    def adjust(self, amount: float) -> None:
        """Add `amount` to the level (a charge), or take it off (a refund, never below empty)."""
        self._leak()
        self._level = max(0.0, self._level + amount)
        if amount < 0:
            self._wake_next()

    def spent(self) -> float:
        """What the bucket holds now: spent and not yet leaked."""
        self._leak()
        return self._level

    def retune(self, max_rate: float, period: float) -> None:
        """Change capacity and rate, keeping what is spent."""
        self._leak()
        self.max_rate = max_rate
        self.time_period = period
        self._rate_per_sec = max_rate / period
        self._wake_next()

    def prime(self, first: float) -> None:
        """Start full but for `first`: the first request goes at once, the rest are paced from the start."""
        self._leak()
        self._level = max(self._level, float(self.max_rate) - first)

    def fill(self) -> None:
        """Mark the bucket full, so traffic resumes at the paced rate rather than in a burst."""
        self._leak()
        self._level = max(self._level, float(self.max_rate))


class RateLimiter:
    """Gate for every attempt: wait out any cooldown, then one request and its tokens.

    Keep `burst_seconds` below the server's enforcement window (OpenAI and the simulator: about a second)
    so that jitter between our send and its arrival never pushes the server over.
    """

    __slots__ = (
        "_burst",
        "_configured_rpm",
        "_configured_tpm",
        "_cooldown_until",
        "_learned",
        "_probing",
        "_requests",
        "_started",
        "_tokens",
        "auto",
        "headers_seen",
        "rpm",
        "tpm",
    )

    def __init__(
        self, rpm: float | None = None, tpm: float | None = None, burst_seconds: float = 1.0, auto: bool = False
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._configured_rpm = rpm
        self._configured_tpm = tpm
        self._burst = burst_seconds
        self._requests = _bucket(rpm, burst_seconds)
        self._tokens = _bucket(tpm, burst_seconds)
        self._cooldown_until = 0.0
        self._started = False
        self.auto = auto and not rpm and not tpm
        self.headers_seen: bool | None = None  # None until the first HTTP answer says
        self._probing = False
        self._learned: anyio.Event | None = None

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of `tokens` estimated tokens may be sent, and charge it."""
        if self.auto and self.headers_seen is None:
            await self._probe_first()
        await self._wait_cooldown()
        if not self._started:
            self._prime(tokens)
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

    def _prime(self, tokens: int) -> None:
        # No burst at the start: two processes starting together on one key must not spend the server's
        # whole allowance at once. A burst is allowed only after the run has been idle.
        self._started = True
        if self._requests is not None:
            self._requests.prime(1)
        if self._tokens is not None:
            self._tokens.prime(min(float(tokens), self._tokens.max_rate))

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

    def observe(self, status: int | None, headers: RateLimitHeaders | None) -> None:
        """Take in what one HTTP answer said of the budgets (`headers` None: it sent none).

        `status` None means no answer at all (timeout, dropped connection): it says nothing of the headers,
        so in auto mode another request may go and ask.
        """
        if self.headers_seen is None:
            if status is not None:
                self.headers_seen = headers is not None
            self._probing = False
            if self._learned is not None:
                self._learned.set()
                self._learned = None
        if headers is None:
            return
        self._follow_limits(headers)
        self._sync(self._requests, headers.limit_requests, headers.remaining_requests)
        self._sync(self._tokens, headers.limit_tokens, headers.remaining_tokens)

    def _follow_limits(self, headers: RateLimitHeaders) -> None:
        wanted = _lower(self._configured_rpm, headers.limit_requests)
        self.rpm, self._requests = _follow(self.rpm, self._requests, wanted, self._burst, first=1.0)
        wanted = _lower(self._configured_tpm, headers.limit_tokens)
        self.tpm, self._tokens = _follow(self.tpm, self._tokens, wanted, self._burst, first=0.0)

    @staticmethod
    def _sync(bucket: _Bucket | None, limit: float | None, remaining: float | None) -> None:
        """Charge what the server counts as spent beyond what this client spent (another client's use)."""
        if bucket is None or limit is None or remaining is None:
            return
        beyond = (limit - remaining) - bucket.spent() - (0.1 * bucket.max_rate + 1.0)
        if beyond > 0:
            bucket.adjust(beyond)

    async def _probe_first(self) -> None:
        """Auto mode: one request goes alone and the others wait for its answer's headers.

        A probe that gets no answer lets the next request ask; one still out after `PROBE_PATIENCE`
        seconds (a slow completion) lets another go beside it.
        """
        while self.headers_seen is None:
            if not self._probing:
                self._probing = True
                return
            if self._learned is None:
                self._learned = anyio.Event()
            with anyio.move_on_after(PROBE_PATIENCE):
                await self._learned.wait()
                continue
            self._probing = False

    @property
    def cooldown_remaining(self) -> float:
        """Seconds left of the current cooldown (0 when none)."""
        return max(0.0, self._cooldown_until - time.monotonic())

    async def _wait_cooldown(self) -> None:
        while (wait := self._cooldown_until - time.monotonic()) > 0:
            await anyio.sleep(wait)


def _follow(
    current: float | None, bucket: _Bucket | None, wanted: float | None, burst_seconds: float, first: float
) -> tuple[float | None, _Bucket | None]:
    """A budget moved to `wanted` (a new bucket starts primed, so learning a limit brings no burst)."""
    if not wanted or wanted == current:
        return current, bucket
    fresh = bucket is None
    bucket = _resize(bucket, wanted, burst_seconds)
    if fresh and bucket is not None:
        bucket.prime(first)
    return wanted, bucket


def _lower(configured: float | None, advertised: float | None) -> float | None:
    if configured and advertised:
        return min(configured, advertised)
    return configured or advertised


def _resize(bucket: _Bucket | None, per_minute: float, burst_seconds: float) -> _Bucket | None:
    """The bucket retuned to a new rate in place (its level and waiters kept), or a new one."""
    if bucket is None:
        return _bucket(per_minute, burst_seconds)
    bucket.retune(*_shape(per_minute, burst_seconds))
    return bucket


def _shape(per_minute: float, burst_seconds: float) -> tuple[float, float]:
    """(capacity, period) of a bucket for a per-minute budget; it holds at least one unit."""
    per_second = per_minute / 60.0
    period = max(burst_seconds, 1.0 / per_second)
    return per_second * period, period


def _bucket(per_minute: float | None, burst_seconds: float) -> _Bucket | None:
    if not per_minute:
        return None
    return _Bucket(*_shape(per_minute, burst_seconds))
