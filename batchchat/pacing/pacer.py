"""`Pacer`: everything that decides when a request may go, for one run, and the feedback from each answer.

It holds a `Budget` per model (made as a model is first met, its state in a `BudgetStore`: in process by
default), the concurrency gate with its controller (created when a server turns out to publish no limits),
and routes every admission, settle and answer to the budget of the request's model: a 429 pauses its model
alone, and each model learns its limits from its own answers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from batchchat.config.settings import RunSettings
from batchchat.http.outcomes import Outcome, Retryable, Success
from batchchat.input.parse import Job
from batchchat.pacing.adaptive import AimdController, ConcurrencyGate
from batchchat.pacing.budget import Budget, Ticket, budget_key
from batchchat.pacing.headers import RateLimitHeaders
from batchchat.pacing.store import BudgetStore, LocalStore
from batchchat.pacing.tokens import charged_tokens, completion_cap


def job_model(job: Job) -> str:
    """The model a job asks for ("" when it names none: the server's default)."""
    model = job.body.get("model")
    return model if isinstance(model, str) else ""


class Pacer:
    """The budgets per model, the concurrency gate and its controller, of one run."""

    __slots__ = ("_aimd", "_clock", "_settings", "_sleep", "budgets", "slots", "store")

    def __init__(
        self,
        settings: RunSettings,
        store: BudgetStore | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self.store: BudgetStore = store if store is not None else LocalStore(clock)
        self.budgets: dict[str, Budget] = {}
        self.slots = ConcurrencyGate(settings.concurrency)
        self._aimd = (AimdController(self.slots, settings.concurrency, clock=clock)
                      if settings.adapt == "on" else None)

    def budget(self, model: str) -> Budget:
        """The budget of `model`, made with its limits (`--model-limit`, else `--rpm`/`--tpm`) when first met."""
        budget = self.budgets.get(model)
        if budget is None:
            settings = self._settings
            rpm, tpm = settings.rpm, settings.tpm
            for name, model_rpm, model_tpm in settings.model_limits:
                if name == model:
                    rpm, tpm = model_rpm, model_tpm
            endpoint = settings.endpoint
            key = budget_key(endpoint.api_key.reveal() if endpoint.api_key else "", endpoint.base_url, model)
            budget = self.budgets[model] = Budget(
                self.store, key, model, rpm=rpm, tpm=tpm, burst_seconds=settings.burst_seconds,
                adapt=settings.adapt, max_wait=settings.retry.max_wait, clock=self._clock, sleep=self._sleep)
        return budget

    @property
    def headers_seen(self) -> bool | None:
        """Whether the server sent x-ratelimit headers (any model; None: no answer yet)."""
        seen = [b.headers_seen for b in self.budgets.values() if b.headers_seen is not None]
        return any(seen) if seen else None

    def charge(self, job: Job) -> tuple[int, int]:
        """(prompt estimate, whole up-front charge) of a job: the prompt plus its completion cap."""
        prompt = self.budget(job_model(job)).estimator.estimate(job)
        return prompt, prompt + completion_cap(job)

    def too_large(self, job: Job, cost: int) -> str | None:
        """Why a request of `cost` tokens can never be admitted by its model's budget, or None."""
        return self.budget(job_model(job)).too_large(cost)

    async def admit(self, job: Job, cost: int) -> Ticket:
        """Wait for a concurrency slot, then for the model's budget; on cancellation nothing stays taken."""
        await self.slots.acquire()
        try:
            return await self.budget(job_model(job)).acquire(cost)
        except BaseException:
            self.slots.release()
            raise

    async def readmit(self, job: Job, cost: int) -> Ticket:
        """A retry re-acquires its model's budget (its slot is still held)."""
        return await self.budget(job_model(job)).acquire(cost)

    def release(self) -> None:
        """Give a concurrency slot back."""
        self.slots.release()

    async def settle(self, job: Job, prompt: int, usage: object) -> int | None:
        """Settle the up-front charge against a success's real prompt tokens; returns them (None if unknown)."""
        real = charged_tokens(usage if isinstance(usage, dict) else None)
        if real is not None:
            budget = self.budget(job_model(job))
            await budget.settle(real - prompt)
            budget.estimator.learn(job, real)
        return real

    async def observe(self, job: Job, ticket: Ticket | None, outcome: Outcome, latency: float) -> None:
        """Feed one answer to its model's budget (headers, a 429) and to the concurrency controller."""
        budget = self.budget(job_model(job))
        answered = isinstance(outcome, Success | Retryable) and outcome.status is not None
        raw = outcome.headers if answered else None  # type: ignore[union-attr]
        headers = RateLimitHeaders.parse(raw) if raw is not None else None
        status = outcome.status if answered else None  # type: ignore[union-attr]
        refused = isinstance(outcome, Retryable) and outcome.status == 429
        # a refused attempt's charge goes back before the headers are compared with what we spent
        if refused:
            await budget.refused(ticket, outcome.retry_after)  # type: ignore[union-attr]
            ticket = None
        elif isinstance(outcome, Success):
            budget.answered()
        await budget.observe(status, headers, ticket)
        settings = self._settings
        if self._aimd is None:
            if (settings.adapt != "auto" or self.headers_seen is not False or settings.rpm or settings.tpm
                    or settings.model_limits):
                return
            self._aimd = AimdController(self.slots, settings.concurrency, clock=self._clock)  # no limits known
        if isinstance(outcome, Success):
            self._aimd.on_success(latency, budget.model)
        elif isinstance(outcome, Retryable) and (outcome.status in (429, 503) or outcome.reason == "timeout"):
            self._aimd.on_overload()
