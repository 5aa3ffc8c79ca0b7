"""One model's budget: its limits (given or learned), its pacing, its 429 cooldown and its prompt estimator.

Providers set their limits per model, and an answer's `x-ratelimit-*` headers describe the model that was
called, so a run holds one `Budget` per (endpoint, key, model), made as a model is first met. A budget's
logic lives here; its state (the two buckets, the cooldown) lives in a `BudgetStore` under an opaque key (a
hash of key, endpoint and model), so sharing budgets between processes is a different store, not a different
budget. Time comes from `clock` and waiting from `sleep`: tests drive both with a fake clock.

What a budget does with what the server says (none of it can leave it slower than its plain limits):
- limits (`adapt` not off): learned from the model's own answers; a header never raises a given limit. What
  a budget learns it publishes in the store, and it takes up what others published (a fleet shares one
  budget): a new limit, or a lower one, at most every `LIMITS_PICKUP` seconds; in auto mode it asks once
  before its probe, so a process joining a fleet that knows the limits sends at once, without probing;
- `remaining`: what the server counted beyond what this process can account for at the same moment is
  another client's spending, charged as debt and refunded when no longer borne out (`reconcile.py`);
- a 429 gives back the refused attempt's request and tokens (the server did not count them) and pauses this
  model only, for the wait the server named; the budget then starts afresh (primed: no burst, and no turn
  lost). A 429 that names no wait pauses for longer each time in a row (up to `max_wait`, `timing.py`), so a
  minute-scale window is waited out rather than met with a line's every attempt. A 429 teaches nothing lasting: the
  headers and 429s are evidence about a minute, not about the next second, and the limits stay the plain
  ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from batchchat.pacing.bucket import Limits, capacity
from batchchat.pacing.headers import RateLimitHeaders
from batchchat.pacing.reconcile import Reconciler, Ticket
from batchchat.pacing.store import BudgetStore, hashed_name
from batchchat.pacing.timing import Timing
from batchchat.pacing.tokens import PromptEstimator

PROBE_PATIENCE = 5.0  # seconds the first request of a model in auto mode is waited for alone
LIMITS_PICKUP = 5.0  # seconds between two looks at the limits other processes published in the store


def budget_key(api_key: str, base_url: str, model: str) -> str:
    """A budget's name in a store: a hex SHA-256 of key, endpoint and model (`store.hashed_name`)."""
    return hashed_name(api_key, base_url.rstrip("/"), model)


class Budget:
    """The requests and tokens of one (endpoint, key, model), paced, with what its answers teach."""

    __slots__ = (
        "_account",
        "_burst",
        "_clock",
        "_given",
        "_key",
        "_learned",
        "_learning",
        "_limits",
        "_max_wait",
        "_pickup_at",
        "_probe_done",
        "_probing",
        "_sleep",
        "_store",
        "_timing",
        "adapt",
        "estimator",
        "headers_seen",
        "model",
    )

    def __init__(
        self,
        store: BudgetStore,
        key: str,
        model: str,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        burst_seconds: float = 0.5,
        adapt: str = "auto",
        max_wait: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
    ) -> None:
        self._store = store
        self._key = key
        self.model = model
        self._given = (rpm or None, tpm or None)
        self._learned: list[float | None] = [None, None]
        self._limits: Limits | None = None  # made from the above when first asked for after a change
        self._burst = burst_seconds
        self.adapt = adapt
        self._learning = adapt != "off"  # headers may set (auto, nothing given) or lower the limits
        self._pickup_at = -math.inf if self._learning else math.inf  # when next to look at published limits
        self._max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self.estimator = PromptEstimator()
        self.headers_seen: bool | None = None  # None until the first HTTP answer says
        self._probing = False
        self._probe_done: anyio.Event | None = None
        self._account = Reconciler()  # what this process moved in its levels, and the debt charged for others
        self._timing = Timing()  # the pause a 429 earns, the guard of a wait for room

    # -- limits ----------------------------------------------------------------------------------------

    @property
    def rpm(self) -> float | None:
        """The request limit in force (the given one, lowered by headers; None: unlimited)."""
        return _lower(self._given[0], self._learned[0])

    @property
    def tpm(self) -> float | None:
        """The token limit in force (the given one, lowered by headers; None: unlimited)."""
        return _lower(self._given[1], self._learned[1])

    @property
    def burst_seconds(self) -> float:
        """The burst this budget allows after an idle spell."""
        return self._burst

    @property
    def limits(self) -> Limits:
        """The limits the store paces by: exactly those in force, with the burst."""
        limits = self._limits
        if limits is None:
            limits = self._limits = Limits(self.rpm, self.tpm, self._burst)
        return limits

    @property
    def auto(self) -> bool:
        """Whether this budget waits for the first answer's headers to know its limits."""
        return self._learning and self._given == (None, None)

    def too_large(self, cost: float) -> str | None:
        """Why a request of `cost` tokens can never be admitted by this model's budget, or None."""
        tpm = self.tpm
        if tpm and cost > tpm:
            source = "--tpm" if self._given[1] and self._given[1] <= tpm else "server's (x-ratelimit-limit-tokens)"
            return (f"the request is estimated at {cost:,.0f} tokens (prompt + max_tokens x n), more than the "
                    f"whole {source} budget of {tpm:,.0f} tokens per minute for {self.model}")
        return None

    # -- admission -------------------------------------------------------------------------------------

    async def acquire(self, tokens: float) -> Ticket:
        """Wait until one request of `tokens` may be sent (cooldown, then capacity) and charge it."""
        if self.auto and self.headers_seen is None:
            await self._probe_first()
        if (now := self._clock()) >= self._pickup_at:
            await self._pick_up(now)
        limits = self.limits
        while (wait := await self._store.reserve(self._key, limits, tokens)) > 0.0:
            await self._sleep(wait + self._timing.guard_for(limits, tokens))
            limits = self.limits
        return self._account.ticket(self._clock(), tokens)

    async def _probe_first(self) -> None:
        """Auto mode: the model's first request goes alone; the others wait for its answer's headers.

        Unless the fleet knows the limits already: the first request asks the store (the others wait for
        that answer too), and limits published there are taken up with no probe. A probe that gets no answer
        lets the next request ask; one still out after `PROBE_PATIENCE` seconds (a slow completion) lets
        another go beside it.
        """
        while self.headers_seen is None and self._learned == [None, None]:
            if not self._probing:
                self._probing = True
                if (now := self._clock()) >= self._pickup_at:  # once (then every `LIMITS_PICKUP` seconds)
                    try:
                        await self._pick_up(now)
                    except BaseException:
                        self._end_probe()
                        raise
                    if self._learned != [None, None]:
                        self._end_probe()  # the fleet's limits: no probe, and the others go too
                return
            if self._probe_done is None:
                self._probe_done = anyio.Event()
            with anyio.move_on_after(PROBE_PATIENCE):
                await self._probe_done.wait()
                continue
            self._probing = False

    async def settle(self, delta_tokens: float) -> None:
        """Charge (> 0) or refund (< 0) the difference between a request's estimate and its real cost."""
        if delta_tokens and self.tpm is not None:
            await self._store.adjust(self._key, self.limits, delta_tokens)
        self._account.sent(self._clock(), 0.0, delta_tokens)

    # -- what answers say ------------------------------------------------------------------------------

    async def observe(self, status: int | None, headers: RateLimitHeaders | None, ticket: Ticket | None) -> None:
        """Take in what one answer said of the budget (`headers` None: it sent none; `status` None: no answer)."""
        if self.headers_seen is None:
            if status is not None:
                self.headers_seen = headers is not None
            self._end_probe()
        if headers is None or not self._learning:
            return  # --adapt off: exactly the limits given, whatever the headers say
        await self._learn(headers, ticket)
        if ticket is not None:
            await self._account.reconcile(self._store, self._key, self.limits, headers, ticket, self._clock())

    def _end_probe(self) -> None:
        """The probe (or the look at the store before it) is over: whoever waited for it asks again."""
        self._probing = False
        if self._probe_done is not None:
            self._probe_done.set()
            self._probe_done = None

    async def _learn(self, headers: RateLimitHeaders, ticket: Ticket | None = None) -> None:
        """Take the limits the headers advertise, and publish those that changed for the fleet."""
        learned = self._learned
        rpm = headers.limit_requests or learned[0]
        tpm = headers.limit_tokens or learned[1]
        if [rpm, tpm] == learned:
            return
        changed = (None if rpm == learned[0] else rpm, None if tpm == learned[1] else tpm)
        await self._take_learned(rpm, tpm, ticket)
        await self._store.publish_limits(self._key, *changed)

    async def _pick_up(self, now: float) -> None:
        """Take up the limits other processes published where they are new here or lower than ours."""
        self._pickup_at = now + LIMITS_PICKUP  # first: the acquires meanwhile do not ask too
        published = await self._store.learned_limits(self._key)
        learned = self._learned
        rpm, tpm = _newer(published[0], learned[0]), _newer(published[1], learned[1])
        if [rpm, tpm] != learned:
            await self._take_learned(rpm, tpm)

    async def _take_learned(self, rpm: float | None, tpm: float | None, probe: Ticket | None = None) -> None:
        """Make `rpm` and `tpm` the learned limits (the given ones still cap them); `probe`: the attempt whose
        answer taught them, sent before they were known (the server still holds what is left of it)."""
        before = (self.rpm, self.tpm)
        self._learned[0], self._learned[1] = rpm, tpm
        self._limits = None
        if (self.rpm, self.tpm) == before:
            return
        # a limit learned where there was none starts primed (no burst), as a fresh budget does, and holding what
        # is left of the probe (at 30 RPM the next request goes 2 s after the probe, not as its answer comes)
        limits = self.limits
        since = 0.0 if probe is None else max(0.0, self._clock() - probe.at)
        if before[0] is None and limits.rpm is not None:
            held = 0.0 if probe is None else 1.0 - since * limits.rpm / 60.0
            await self._store.adjust_requests(self._key, limits,
                                              max(capacity(limits.rpm, limits.burst_seconds) - 1.0, held))
        if before[1] is None and limits.tpm is not None:
            held = 0.0 if probe is None else probe.tokens - since * limits.tpm / 60.0
            await self._store.adjust(self._key, limits, max(capacity(limits.tpm, limits.burst_seconds), held))

    async def refused(self, ticket: Ticket | None, retry_after: float | None) -> float:
        """A 429: give back the attempt's charge and pause this model; returns the cooldown in seconds."""
        now = self._clock()
        limits = self.limits
        if ticket is not None:
            await self._store.adjust_requests(self._key, limits, -1.0)
            if ticket.tokens:
                await self._store.adjust(self._key, limits, -ticket.tokens)
            self._account.sent(now, -1.0, -ticket.tokens)
        left = 0.0 if retry_after is not None else (await self._store.snapshot(self._key, limits)).cooldown
        wait = min(self._timing.refused(retry_after, left), self._max_wait)
        await self._store.pause(self._key, limits, wait)
        return wait

    def answered(self) -> None:
        """A success: 429s that name no wait are no longer in a row; the guard relaxes after enough of them."""
        self._timing.answered()

    async def pause(self, seconds: float) -> None:
        """Hold every caller of this budget for `seconds` from now."""
        await self._store.pause(self._key, self.limits, min(seconds, self._max_wait))

    async def cooldown_remaining(self) -> float:
        """Seconds left of the current cooldown (0 when none)."""
        return (await self._store.snapshot(self._key, self.limits)).cooldown


def _lower(given: float | None, learned: float | None) -> float | None:
    if given and learned:
        return min(given, learned)
    return given or learned


def _newer(published: float | None, learned: float | None) -> float | None:
    """A limit another process published replaces the one learned here when it is new or lower."""
    return published if published and (learned is None or published < learned) else learned
