"""Rate limits the way OpenAI enforces them: per key, requests and tokens, over short windows.

Each limit is a `Bucket` with capacity ``limit x window / 60`` (at least 1) that refills at
``limit / 60`` per second. A request is admitted when its charge fits in what is left; a charge
larger than the capacity (but within the per-minute limit) is admitted only from an empty bucket;
a charge above the per-minute limit itself is refused for good ("Request too large"). Header
values: remaining = limit - (charged and not yet refilled), reset = time until fully refilled.
Time comes from an injectable clock, so tests pin exact values without sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["Bucket", "Decision", "KeyLimits", "Limiter", "format_duration"]


def format_duration(seconds: float) -> str:
    """Format like OpenAI's reset headers (Go durations, ms resolution): 0s, 250ms, 1.5s, 6m0s."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}" if rest % 1000 == 0 else f"{rest / 1000:.3f}".rstrip("0")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class Bucket:
    """One limit: `used` units drain at `rate`/s; admits while used + amount ≤ capacity."""

    __slots__ = ("capacity", "limit", "rate", "stamp", "used")

    def __init__(self, limit: int, window: float, now: float) -> None:
        self.limit = limit
        self.capacity = max(limit * window / 60.0, 1.0)
        self.rate = limit / 60.0
        self.used = 0.0
        self.stamp = now

    def drain(self, now: float) -> None:
        """Refill up to `now`."""
        if now > self.stamp:
            used = self.used - (now - self.stamp) * self.rate
            self.used = used if used > 0.0 else 0.0
            self.stamp = now

    def wait(self, amount: float) -> float:
        """Seconds until `amount` fits (0 = now; inf = never: above the per-minute limit)."""
        if amount > self.limit:
            return math.inf
        free = self.capacity - self.used
        if amount <= free + 1e-9:
            return 0.0
        if amount > self.capacity:
            return self.used / self.rate
        return (amount - free) / self.rate

    def remaining(self) -> int:
        """limit - used, floored, at least 0."""
        return max(0, math.floor(self.limit - self.used + 1e-9))

    def reset(self) -> float:
        """Seconds until the bucket is fully refilled."""
        return self.used / self.rate


class Decision:
    """Outcome of `Limiter.admit`: ok, or which limit refused and for how long."""

    __slots__ = ("kind", "limit", "ok", "requested", "used", "wait")

    def __init__(
        self, ok: bool, kind: str = "", wait: float = 0.0, limit: int = 0, used: int = 0, requested: int = 0
    ) -> None:
        self.ok = ok
        self.kind = kind
        self.wait = wait
        self.limit = limit
        self.used = used
        self.requested = requested


ADMITTED = Decision(True)


class KeyLimits:
    """The request and token buckets of one API key."""

    __slots__ = ("requests", "tokens")

    def __init__(self, rpm: int | None, tpm: int | None, window: float, now: float) -> None:
        self.requests = Bucket(rpm, window, now) if rpm else None
        self.tokens = Bucket(tpm, window, now) if tpm else None


class Limiter:
    """Per-key rpm/tpm buckets with an injectable clock; also renders x-ratelimit-* headers."""

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        window: float = 1.0,
        clock: Callable[[], float] | None = None,
        headers: bool = True,
    ) -> None:
        import time

        self.rpm = rpm
        self.tpm = tpm
        self.window = window
        self.clock = clock or time.monotonic
        self.enabled = bool(rpm or tpm)
        self.send_headers = headers and self.enabled
        self._keys: dict[str, KeyLimits] = {}

    def _limits(self, key: str) -> KeyLimits:
        limits = self._keys.get(key)
        now = self.clock()
        if limits is None:
            limits = self._keys[key] = KeyLimits(self.rpm, self.tpm, self.window, now)
        else:
            if limits.requests is not None:
                limits.requests.drain(now)
            if limits.tokens is not None:
                limits.tokens.drain(now)
        return limits

    def admit(self, key: str, tokens: int) -> Decision:
        """Charge one request of `tokens` tokens to `key`, or say why not (nothing charged then)."""
        if not self.enabled:
            return ADMITTED
        limits = self._limits(key)
        req, tok = limits.requests, limits.tokens
        if req is not None:
            wait = req.wait(1)
            if wait > 0:
                return Decision(False, "requests", wait, req.limit, math.ceil(req.used), 1)
        if tok is not None:
            wait = tok.wait(tokens)
            if wait > 0:
                return Decision(False, "tokens", wait, tok.limit, math.ceil(tok.used), tokens)
        if req is not None:
            req.used += 1
        if tok is not None:
            tok.used += tokens
        return ADMITTED

    def headers(self, key: str) -> bytes:
        """The x-ratelimit-* header lines (CRLF-terminated) for `key`, or b"" when off."""
        if not self.send_headers:
            return b""
        limits = self._limits(key)
        out = []
        req, tok = limits.requests, limits.tokens
        if req is not None:
            out.append(f"x-ratelimit-limit-requests: {req.limit}\r\n")
        if tok is not None:
            out.append(f"x-ratelimit-limit-tokens: {tok.limit}\r\n")
        if req is not None:
            out.append(f"x-ratelimit-remaining-requests: {req.remaining()}\r\n")
        if tok is not None:
            out.append(f"x-ratelimit-remaining-tokens: {tok.remaining()}\r\n")
        if req is not None:
            out.append(f"x-ratelimit-reset-requests: {format_duration(req.reset())}\r\n")
        if tok is not None:
            out.append(f"x-ratelimit-reset-tokens: {format_duration(tok.reset())}\r\n")
        return "".join(out).encode()
