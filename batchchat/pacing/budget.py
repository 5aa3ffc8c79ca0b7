"""One model's budget: its limits (given or learned), its pacing, its 429 cooldown and its prompt estimator.

Providers set their limits per model, and an answer's `x-ratelimit-*` headers describe the model that was
called, so a run holds one `Budget` per (endpoint, key, model), made as a model is first met. A budget's
logic lives here; its state (the two buckets, the cooldown) lives in a `BudgetStore` under an opaque key (a
hash of key, endpoint and model), so sharing budgets between processes is a different store, not a different
budget. Time comes from `clock` and waiting from `sleep`: tests drive both with a fake clock.

What a budget does with what the server says:
- limits (`adapt` not off): learned from the model's own answers; a header never raises a given limit. What
  a budget learns it publishes in the store, and it takes up what others published (a fleet shares one
  budget): a new limit, or a lower one, at most every `LIMITS_PICKUP` seconds; in auto mode it asks once
  before its probe, so a process joining a fleet that knows the limits sends at once, without probing;
- reconciliation with `remaining`: what the server counts beyond what this client could account for is
  charged (another client on the key), judged by the kind of counter the headers reveal: a bucket (its reset
  is what it holds over its rate) is compared with this budget's level; a window (a reset that is not, or no
  reset at all: a calendar minute) with everything this client sent within that window, so our own sends are
  never taken for someone else's. Debt charged that way and not borne out by a later answer is refunded;
- a 429 gives back the refused attempt's request and tokens (the server did not count them), pauses this
  model only, and, when it came while we kept to the limits we know, teaches the budget that the server's
  window is stricter than a bucket: a smaller burst and a little slack below the limit (at most `MAX_SLACK`).
  A 429 that names no wait pauses for longer each time in a row (up to `max_wait`), so a minute-scale window
  is waited out rather than met with a line's every attempt.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from batchchat.pacing.bucket import Limits, capacity
from batchchat.pacing.headers import RateLimitHeaders
from batchchat.pacing.store import BudgetStore, hashed_name
from batchchat.pacing.tokens import PromptEstimator

PROBE_PATIENCE = 5.0  # seconds the first request of a model in auto mode is waited for alone
DEFAULT_429_COOLDOWN = 1.0  # seconds, for a 429 that names no wait; grows x4 for each such 429 in a row
QUIET_429_GROWTH = 4.0
MIN_BURST = 0.05  # seconds: the smallest burst a strict server teaches
SLACK_STEP = 0.01  # a share of the limit given up per lesson from a strict server...
MAX_SLACK = 0.04  # ...and at most this much in all
RECENT_SPAN = 65.0  # seconds of our own sending kept (one-second slots) to judge a window's count
BUCKET_EVIDENCE = 8  # answers in a row whose reset is what they hold over the rate: the server is a bucket
FOREIGN_MEMORY = 60.0  # seconds after a charge for another client's spend in which a 429 is not a lesson
LIMITS_PICKUP = 5.0  # seconds between two looks at the limits other processes published in the store


def budget_key(api_key: str, base_url: str, model: str) -> str:
    """A budget's name in a store: a hex SHA-256 of key, endpoint and model (`store.hashed_name`)."""
    return hashed_name(api_key, base_url.rstrip("/"), model)


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted attempt: its charge, and how much this budget had sent before it (for reconciliation)."""

    tokens: float
    sent_requests: float
    sent_tokens: float
    at: float


class _Recent:
    """What this budget sent in each of the last `RECENT_SPAN` seconds (one slot a second)."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: deque[list[float]] = deque()

    def add(self, now: float, requests: float, tokens: float) -> None:
        second = math.floor(now)
        slots = self._slots
        if slots and slots[-1][0] == second:
            slots[-1][1] += requests
            slots[-1][2] += tokens
            return
        slots.append([second, requests, tokens])
        while slots and slots[0][0] < second - RECENT_SPAN:
            slots.popleft()

    def within(self, now: float, seconds: float) -> tuple[float, float]:
        """(requests, tokens) sent in the whole seconds that overlap the last `seconds`."""
        start = math.floor(now - seconds)
        requests = tokens = 0.0
        for second, r, t in reversed(self._slots):
            if second < start:
                break
            requests += r
            tokens += t
        return requests, tokens


class Budget:
    """The requests and tokens of one (endpoint, key, model), paced, with what its answers teach."""

    __slots__ = (
        "_bucketish",
        "_burst",
        "_clock",
        "_debt",
        "_foreign_at",
        "_given",
        "_key",
        "_learned",
        "_learning",
        "_lesson_at",
        "_limits",
        "_max_wait",
        "_pickup_at",
        "_probe_done",
        "_probing",
        "_quiet_429s",
        "_recent",
        "_sent",
        "_slack",
        "_sleep",
        "_store",
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
        self._slack = 0.0
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
        self._sent = [0.0, 0.0]  # requests, tokens admitted since the start
        self._recent = _Recent()
        self._bucketish = [0, 0]
        self._debt = [0.0, 0.0, 0.0]  # requests, tokens charged for others' spending, as of time [2]
        self._foreign_at = -math.inf
        self._lesson_at = -math.inf
        self._quiet_429s = 0

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
        """The burst this budget allows now (smaller once a strict server has taught it)."""
        return self._burst

    @property
    def slack(self) -> float:
        """The share of the limit this budget leaves unused (learned from a strict server's 429s)."""
        return self._slack

    @property
    def limits(self) -> Limits:
        """The limits the store paces by: those in force less the learned slack, with the learned burst."""
        limits = self._limits
        if limits is None:
            keep = 1.0 - self._slack
            rpm, tpm = self.rpm, self.tpm
            limits = self._limits = Limits(None if rpm is None else rpm * keep, None if tpm is None else tpm * keep,
                                           self._burst)
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
        while (wait := await self._store.reserve(self._key, self.limits, tokens)) > 0.0:
            await self._sleep(wait)
        now = self._clock()
        ticket = Ticket(tokens, self._sent[0], self._sent[1], now)
        self._sent[0] += 1.0
        self._sent[1] += tokens
        self._recent.add(now, 1.0, tokens)
        return ticket

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
        self._sent[1] += delta_tokens
        self._recent.add(self._clock(), 0.0, delta_tokens)

    # -- what answers say ------------------------------------------------------------------------------

    async def observe(self, status: int | None, headers: RateLimitHeaders | None, ticket: Ticket | None) -> None:
        """Take in what one answer said of the budget (`headers` None: it sent none; `status` None: no answer)."""
        if self.headers_seen is None:
            if status is not None:
                self.headers_seen = headers is not None
            self._end_probe()
        if headers is None or not self._learning:
            return  # --adapt off: exactly the limits given, whatever the headers say
        await self._learn(headers)
        if ticket is not None:
            await self._reconcile(headers, ticket)

    def _end_probe(self) -> None:
        """The probe (or the look at the store before it) is over: whoever waited for it asks again."""
        self._probing = False
        if self._probe_done is not None:
            self._probe_done.set()
            self._probe_done = None

    async def _learn(self, headers: RateLimitHeaders) -> None:
        """Take the limits the headers advertise, and publish those that changed for the fleet."""
        learned = self._learned
        rpm = headers.limit_requests or learned[0]
        tpm = headers.limit_tokens or learned[1]
        if [rpm, tpm] == learned:
            return
        changed = (None if rpm == learned[0] else rpm, None if tpm == learned[1] else tpm)
        await self._take_learned(rpm, tpm)
        await self._store.publish_limits(self._key, *changed)

    async def _pick_up(self, now: float) -> None:
        """Take up the limits other processes published where they are new here or lower than ours."""
        self._pickup_at = now + LIMITS_PICKUP  # first: the acquires meanwhile do not ask too
        published = await self._store.learned_limits(self._key)
        learned = self._learned
        rpm, tpm = _newer(published[0], learned[0]), _newer(published[1], learned[1])
        if [rpm, tpm] != learned:
            await self._take_learned(rpm, tpm)

    async def _take_learned(self, rpm: float | None, tpm: float | None) -> None:
        """Make `rpm` and `tpm` the learned limits (the given ones still cap them)."""
        before = (self.rpm, self.tpm)
        self._learned[0], self._learned[1] = rpm, tpm
        self._limits = None
        if (self.rpm, self.tpm) == before:
            return
        # a limit learned where there was none starts primed (no burst), as a fresh budget does
        limits = self.limits
        if before[0] is None and limits.rpm is not None:
            await self._store.adjust_requests(self._key, limits, capacity(limits.rpm, limits.burst_seconds) - 1.0)
        if before[1] is None and limits.tpm is not None:
            await self._store.adjust(self._key, limits, capacity(limits.tpm, limits.burst_seconds))

    async def _reconcile(self, headers: RateLimitHeaders, ticket: Ticket) -> None:
        """Charge what the server counts beyond what this client can account for; refund debt it disowns."""
        limits = self.limits
        now = self._clock()
        snapshot = None
        dims = ((0, limits.rpm, headers.limit_requests, headers.remaining_requests, headers.reset_requests),
                (1, limits.tpm, headers.limit_tokens, headers.remaining_tokens, headers.reset_tokens))
        for i, rate_limit, limit, remaining, reset in dims:
            if rate_limit is None or limit is None or remaining is None:
                continue
            if snapshot is None:
                snapshot = await self._store.snapshot(self._key, limits)
            level = snapshot.requests if i == 0 else snapshot.tokens
            used = max(0.0, limit - remaining)  # what the server counted when it admitted this request
            rate = limit / 60.0
            slack = 0.1 * capacity(rate_limit, limits.burst_seconds) + 1.0
            if reset is not None and abs(reset * rate - used) <= 2.0 + 0.01 * used + 0.002 * rate:
                self._bucketish[i] += 1
            else:
                self._bucketish[i] = 0
            if self._bucketish[i] >= BUCKET_EVIDENCE:
                # a bucket: it holds `used` and leaks it at the limit's rate, as ours does
                ours = level
                sent_since = self._sent[i] - (ticket.sent_requests if i == 0 else ticket.sent_tokens)
                await self._refund_debt(i, limits, level - (used + sent_since) - slack, now)
            else:
                # a window (a calendar minute when no reset is sent): it counts everything we sent within it
                span = 60.0 if reset is None else max(1.0, 2.0 * reset)
                ours = max(level, self._recent.within(now, span + 0.5)[i])
            beyond = used - ours - slack
            if beyond > 0.0:
                if i == 0:
                    await self._store.adjust_requests(self._key, limits, beyond)
                else:
                    await self._store.adjust(self._key, limits, beyond)
                self._debt[i] = self._outstanding(i, now) + beyond
                self._debt[2] = now
                if beyond > 0.5 * capacity(rate_limit, limits.burst_seconds):
                    self._foreign_at = now

    def _outstanding(self, i: int, now: float) -> float:
        """Debt charged for others' spending that has not leaked away yet."""
        rate = (self.rpm if i == 0 else self.tpm) or 0.0
        return max(0.0, self._debt[i] - (now - self._debt[2]) * rate / 60.0)

    async def _refund_debt(self, i: int, limits: Limits, excess: float, now: float) -> None:
        """Give back up to `excess` of the debt charged for others, when the server no longer holds it."""
        refund = min(excess, self._outstanding(i, now))
        if refund <= 0.0:
            return
        if i == 0:
            await self._store.adjust_requests(self._key, limits, -refund)
        else:
            await self._store.adjust(self._key, limits, -refund)
        self._debt[i] = self._outstanding(i, now) - refund
        self._debt[2] = now

    async def refused(self, ticket: Ticket | None, retry_after: float | None) -> float:
        """A 429: give back the attempt's charge, pause this model, learn; returns the cooldown in seconds."""
        now = self._clock()
        limits = self.limits
        if ticket is not None:
            await self._store.adjust_requests(self._key, limits, -1.0)
            if ticket.tokens:
                await self._store.adjust(self._key, limits, -ticket.tokens)
            self._sent[0] -= 1.0
            self._sent[1] -= ticket.tokens
            self._recent.add(now, -1.0, -ticket.tokens)
        if retry_after is not None:
            wait = retry_after
        else:
            snapshot = await self._store.snapshot(self._key, limits)
            if snapshot.cooldown <= 0.0:  # sent after the last cooldown ended: one more in a row
                self._quiet_429s += 1
            wait = DEFAULT_429_COOLDOWN * QUIET_429_GROWTH ** max(0, self._quiet_429s - 1)
        wait = min(wait, self._max_wait)
        self._learn_strictness(now)
        await self._store.pause(self._key, self.limits, wait)
        return wait

    def _learn_strictness(self, now: float) -> None:
        """A 429 while we kept to the limits we know (and no one else was seen spending): a stricter window."""
        if self.rpm is None and self.tpm is None:
            return
        if now - self._foreign_at < FOREIGN_MEMORY or now - self._lesson_at < 1.0:
            return  # another client explains it; or one lesson per second (a burst of 429s is one event)
        self._lesson_at = now
        self._burst = max(MIN_BURST, self._burst / 2.0)
        self._slack = min(MAX_SLACK, self._slack + SLACK_STEP)
        self._limits = None

    def answered(self) -> None:
        """A success: 429s that name no wait are no longer in a row."""
        self._quiet_429s = 0

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
