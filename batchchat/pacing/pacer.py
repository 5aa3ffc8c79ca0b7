"""`Pacer`: everything that decides when a request may go, for one run, and the feedback from each answer.

It holds the request-and-token budget, the concurrency gate with its controller (created when a server
turns out to publish no limits), and the prompt-token estimator; the run asks it to admit a request, to
re-admit a retry, and tells it what each attempt's answer said.
"""

from __future__ import annotations

from batchchat.config.settings import RunSettings
from batchchat.http.outcomes import Outcome, Retryable, Success
from batchchat.input.parse import Job
from batchchat.pacing.adaptive import AimdController, ConcurrencyGate
from batchchat.pacing.headers import RateLimitHeaders
from batchchat.pacing.limiter import RateLimiter
from batchchat.pacing.tokens import PromptEstimator, charged_tokens, completion_cap

DEFAULT_429_COOLDOWN = 1.0  # seconds, when a 429 names no Retry-After


class Pacer:
    """The budget, the concurrency gate and the estimator of one run."""

    __slots__ = ("_aimd", "_settings", "estimator", "limiter", "slots")

    def __init__(self, settings: RunSettings) -> None:
        self._settings = settings
        self.limiter = RateLimiter(settings.rpm, settings.tpm, settings.burst_seconds, auto=settings.adapt != "off")
        self.slots = ConcurrencyGate(settings.concurrency)
        self._aimd = AimdController(self.slots, settings.concurrency) if settings.adapt == "on" else None
        self.estimator = PromptEstimator()

    @property
    def headers_seen(self) -> bool | None:
        """Whether the server sent x-ratelimit headers (None: no answer yet)."""
        return self.limiter.headers_seen

    def charge(self, job: Job) -> tuple[int, int]:
        """(prompt estimate, whole up-front charge) of a job: the prompt plus its completion cap."""
        prompt = self.estimator.estimate(job)
        return prompt, prompt + completion_cap(job)

    def too_large(self, cost: int) -> str | None:
        """Why a request of `cost` tokens can never be admitted, or None."""
        tpm = self._settings.tpm
        if tpm and cost > tpm:
            return (f"the request is estimated at {cost:,} tokens (prompt + max_tokens x n), "
                    f"more than the whole --tpm budget of {tpm:,.0f}")
        return None

    async def admit(self, cost: int) -> None:
        """Wait for a concurrency slot, then for the budget; on cancellation nothing stays taken."""
        await self.slots.acquire()
        try:
            await self.limiter.acquire(cost)
        except BaseException:
            self.slots.release()
            raise

    async def readmit(self, cost: int) -> None:
        """A retry re-acquires rate capacity (its slot is still held)."""
        await self.limiter.acquire(cost)

    def release(self) -> None:
        """Give a concurrency slot back."""
        self.slots.release()

    def settle(self, job: Job, prompt: int, usage: object) -> int | None:
        """Settle the up-front charge against a success's real prompt tokens; returns them (None if unknown)."""
        real = charged_tokens(usage if isinstance(usage, dict) else None)
        if real is not None:
            self.limiter.settle(real - prompt)
            self.estimator.learn(job, real)
        return real

    def observe(self, outcome: Outcome, latency: float) -> None:
        """Feed one answer to the budget (rate-limit headers, a 429's cooldown) and the concurrency controller."""
        answered = isinstance(outcome, Success | Retryable) and outcome.status is not None
        headers = outcome.headers if answered else None  # type: ignore[union-attr]
        self.limiter.observe(outcome.status if answered else None,  # type: ignore[union-attr]
                             RateLimitHeaders.parse(headers) if headers is not None else None)
        if isinstance(outcome, Retryable) and outcome.status == 429:
            wait = outcome.retry_after if outcome.retry_after is not None else DEFAULT_429_COOLDOWN
            self.limiter.pause(min(wait, self._settings.retry.max_wait))
        settings = self._settings
        if self._aimd is None:
            if settings.adapt != "auto" or self.limiter.headers_seen is not False or settings.rpm or settings.tpm:
                return
            self._aimd = AimdController(self.slots, settings.concurrency)  # a server with no limits
        if isinstance(outcome, Success):
            self._aimd.on_success(latency)
        elif isinstance(outcome, Retryable) and (outcome.status in (429, 503) or outcome.reason == "timeout"):
            self._aimd.on_overload()
