"""A request budget and a token budget as one pure algorithm: a pair of leaky buckets with debt.

Plain arithmetic on a `BucketState` with an explicit `now` (seconds): no clock is read and nothing waits,
so the same functions run in process (`LocalStore`) and, line for line, as Lua inside Redis
(`batchchat/pacing/lua/`). Each limit L per minute is a bucket of capacity `max(1, L * burst_seconds / 60)`
that leaks at `L / 60` a second. A budget starts primed (the first request just fits, the rest are paced:
no burst at the start); a request larger than the token bucket goes from an empty bucket and leaves the rest
as debt; `pause` holds every caller and starts the budget afresh at the cooldown's end (primed again: the
first request then just fits and the rest are paced, no burst, and no turn lost).
A limit that is None is unlimited (its level stays 0). Limits are passed on every call: when they change,
the levels are kept and only capacity and rate move.
"""

from __future__ import annotations

from dataclasses import dataclass

# Slack in the "does it fit" comparisons: pacing arithmetic lands a level on its capacity give or take an ulp,
# and a request refused for 1e-16 of a unit would cost a pointless wait and retry.
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Limits:
    """A budget's limits: requests and tokens per minute (None: unlimited) and the burst it may hold."""

    rpm: float | None = None
    tpm: float | None = None
    burst_seconds: float = 0.5

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, not {value!r}")
        if not self.burst_seconds > 0:
            raise ValueError(f"burst_seconds must be positive, not {self.burst_seconds!r}")


@dataclass(slots=True)
class BucketState:
    """What a budget holds: the two levels (spent, not yet leaked) as of `stamp`, and its cooldown."""

    requests: float = 0.0
    tokens: float = 0.0
    stamp: float = 0.0
    cooldown_until: float = 0.0
    started: bool = False


def capacity(per_minute: float, burst_seconds: float) -> float:
    """What a bucket for `per_minute` holds: `burst_seconds` of traffic, and at least one unit."""
    return max(1.0, per_minute * burst_seconds / 60.0)


def drain(state: BucketState, limits: Limits, now: float) -> None:
    """Leak both levels from `state.stamp` to `now` (time never runs backwards: an older `now` leaks nothing)."""
    elapsed = now - state.stamp
    if elapsed < 0.0:
        elapsed = 0.0
    else:
        state.stamp = now
    state.requests = 0.0 if limits.rpm is None else max(0.0, state.requests - elapsed * (limits.rpm / 60.0))
    state.tokens = 0.0 if limits.tpm is None else max(0.0, state.tokens - elapsed * (limits.tpm / 60.0))


def reserve(state: BucketState, limits: Limits, tokens: float, now: float) -> float:
    """Take one request and `tokens` if both fit now and no cooldown holds: return 0.0.

    Otherwise take nothing and return the seconds until they would fit (the longest of the cooldown left and
    each limit's shortfall over its rate). The first call (at the start, or after a `pause`) primes the budget
    so that this request just fits at the end of the cooldown, if one holds, or now.
    """
    drain(state, limits, now)
    rpm, tpm = limits.rpm, limits.tpm
    cap_requests = 0.0 if rpm is None else capacity(rpm, limits.burst_seconds)
    cap_tokens = 0.0 if tpm is None else capacity(tpm, limits.burst_seconds)
    take = 0.0 if tpm is None else min(tokens, cap_tokens)
    wait = state.cooldown_until - now
    if wait < 0.0:
        wait = 0.0
    if not state.started:
        state.started = True
        if rpm is not None:
            state.requests = max(state.requests, cap_requests - 1.0 + wait * (rpm / 60.0))
        if tpm is not None:
            state.tokens = max(state.tokens, cap_tokens - take + wait * (tpm / 60.0))
    lag = state.stamp - now  # the levels are as of `stamp`: a `now` before it waits out the difference too
    if lag < 0.0:
        lag = 0.0
    if rpm is not None:
        over = state.requests + 1.0 - cap_requests
        if over > EPSILON:
            wait = max(wait, lag + over / (rpm / 60.0))
    if tpm is not None:
        over = state.tokens + take - cap_tokens
        if over > EPSILON:
            wait = max(wait, lag + over / (tpm / 60.0))
    if wait > 0.0:
        return wait
    if rpm is not None:
        state.requests += 1.0
    if tpm is not None:
        state.tokens += tokens
    return 0.0


def adjust(state: BucketState, limits: Limits, tokens: float, now: float) -> None:
    """Charge `tokens` to the token level (negative: a refund, never below empty)."""
    drain(state, limits, now)
    if limits.tpm is not None:
        state.tokens = max(0.0, state.tokens + tokens)


def adjust_requests(state: BucketState, limits: Limits, requests: float, now: float) -> None:
    """Charge `requests` to the request level (-1: give back the request of an attempt the server refused)."""
    drain(state, limits, now)
    if limits.rpm is not None:
        state.requests = max(0.0, state.requests + requests)


def pause(state: BucketState, limits: Limits, seconds: float, now: float) -> None:
    """Hold every caller until `now + seconds` (a cooldown only grows); at its end the budget starts afresh.

    The levels are left as they are (they leak meanwhile) and the budget is primed again by the next `reserve`,
    as of the cooldown's end: the first request then just fits and the rest are paced, so traffic resumes at
    the paced rate, not in a burst of a whole bucket, and without losing a turn (a 429's retry after 20 ms
    goes after 20 ms, not a whole request's interval later).
    """
    drain(state, limits, now)
    state.cooldown_until = max(state.cooldown_until, now + seconds)
    state.started = False


def idle_after(state: BucketState, limits: Limits) -> float:
    """The time at which the budget is empty and out of cooldown (its state no longer matters but for priming)."""
    until = max(state.stamp, state.cooldown_until)
    if limits.rpm is not None:
        until = max(until, state.stamp + state.requests / (limits.rpm / 60.0))
    if limits.tpm is not None:
        until = max(until, state.stamp + state.tokens / (limits.tpm / 60.0))
    return until
