"""Rate limits as servers enforce them: per (API key, model), requests and tokens, in three styles.

Kinds (`LIMIT_KINDS`), each a small counter with the same five methods (`drain`, `wait`,
`remaining`, `reset`, plus `used`/`limit` for messages); the `Limiter` charges a request to both
counters of its (key, model) or to neither:

- `bucket` (OpenAI; `Bucket`): capacity ``limit x window / 60`` (at least 1), refilled
  continuously at ``limit / 60`` per second. A charge larger than the capacity (but within the
  per-minute limit) is admitted only from an empty bucket.
- `strict` (`StrictWindow`): fixed windows aligned to whole seconds of the clock, each admitting
  at most one second's worth (``limit / 60``); unused allowance is lost at the window's end. Limits
  under 60 per minute get windows of ``ceil(60 / limit)`` whole seconds instead, so that a window
  holds at least one unit. A charge larger than a window's allowance is admitted only into an
  empty window and its excess is owed by the following windows (debt carries over, credit does not).
- `minute` (LiteLLM; `MinuteWindow`): a counter per calendar minute of the clock (windows aligned
  to whole minutes), at most `limit` per minute; its headers carry no reset.

In every kind a charge above the per-minute limit itself is refused for good ("Request too
large"). Header values: remaining = limit - (charged and not yet released), reset = time until
everything charged is released, of the counter the headers describe (`HEADER_MODES`):

- `minute` (OpenAI's shape, the default): a per-minute bucket of capacity `limit`, refilled
  continuously at ``limit / 60`` per second, charged with every admitted request, while admission is
  enforced by the kind's own per-second counter. Its `remaining` is evidence about the minute: it can
  show most of the minute's budget left while a burst inside one second gets a 429. The calendar-minute
  kind is its own per-minute counter: its headers describe it in either mode.
- `admission`: the counter that admits (a second-scale bucket or window), as it stands.

Time comes from an injectable clock, so tests pin exact values without sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

__all__ = [
    "HEADER_MODES",
    "LIMIT_KINDS",
    "Bucket",
    "Decision",
    "KeyLimits",
    "Limiter",
    "MinuteWindow",
    "StrictWindow",
    "format_duration",
]

LIMIT_KINDS: tuple[str, ...] = ("bucket", "strict", "minute")
HEADER_MODES: tuple[str, ...] = ("minute", "admission")

_EPS = 1e-9


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

    sends_reset = True

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
        if amount <= free + _EPS:
            return 0.0
        if amount > self.capacity:
            return self.used / self.rate
        return (amount - free) / self.rate

    def remaining(self) -> int:
        """limit - used, floored, at least 0."""
        return max(0, math.floor(self.limit - self.used + _EPS))

    def reset(self) -> float:
        """Seconds until the bucket is fully refilled."""
        return self.used / self.rate


class StrictWindow:
    """One limit in fixed windows of `span` whole seconds, each admitting `allowance` units."""

    __slots__ = ("allowance", "limit", "now", "span", "start", "used")

    sends_reset = True

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.span = 1 if limit >= 60 else math.ceil(60 / limit)
        self.allowance = limit * self.span / 60.0
        self.start = math.floor(now / self.span) * self.span
        self.now = now
        self.used = 0.0

    def drain(self, now: float) -> None:
        """Move to the window holding `now`: each window end releases one allowance (debt carries, credit not)."""
        self.now = now
        start = math.floor(now / self.span) * self.span
        if start > self.start:
            used = self.used - (start - self.start) / self.span * self.allowance
            self.used = used if used > 0.0 else 0.0
            self.start = start

    def _windows_until(self, level: float) -> int:
        """How many window ends must pass before `used` is at most `level`."""
        if self.used <= level + _EPS:
            return 0
        return math.ceil((self.used - level) / self.allowance - _EPS)

    def wait(self, amount: float) -> float:
        """Seconds until `amount` fits (0 = now; inf = never: above the per-minute limit)."""
        if amount > self.limit:
            return math.inf
        # A charge above the allowance needs an empty window; a smaller one, room for itself.
        windows = self._windows_until(0.0 if amount > self.allowance else self.allowance - amount)
        if windows == 0:
            return 0.0
        return self.start + windows * self.span - self.now

    def remaining(self) -> int:
        """limit - used, floored, at least 0."""
        return max(0, math.floor(self.limit - self.used + _EPS))

    def reset(self) -> float:
        """Seconds until everything charged is released (0 when nothing is)."""
        windows = self._windows_until(0.0)
        return self.start + windows * self.span - self.now if windows else 0.0


class MinuteWindow:
    """One limit per calendar minute of the clock: at most `limit` units from :00 to :59."""

    __slots__ = ("limit", "now", "start", "used")

    sends_reset = False

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.start = math.floor(now / 60.0) * 60.0
        self.now = now
        self.used = 0.0

    def drain(self, now: float) -> None:
        """A new minute starts from zero."""
        self.now = now
        start = math.floor(now / 60.0) * 60.0
        if start > self.start:
            self.start = start
            self.used = 0.0

    def wait(self, amount: float) -> float:
        """Seconds until `amount` fits: 0, the rest of this minute, or inf (above the limit)."""
        if amount > self.limit:
            return math.inf
        if self.used + amount <= self.limit + _EPS:
            return 0.0
        return self.start + 60.0 - self.now

    def remaining(self) -> int:
        """limit - used this minute, at least 0."""
        return max(0, math.floor(self.limit - self.used + _EPS))

    def reset(self) -> float:
        """Seconds to the end of this minute when anything is charged, else 0 (never sent as a header)."""
        return self.start + 60.0 - self.now if self.used > 0 else 0.0


Counter = Bucket | StrictWindow | MinuteWindow


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


def _counter(kind: str, limit: int | None, window: float, now: float) -> Counter | None:
    if not limit:
        return None
    if kind == "strict":
        return StrictWindow(limit, now)
    if kind == "minute":
        return MinuteWindow(limit, now)
    return Bucket(limit, window, now)


class KeyLimits:
    """The request and token counters of one (API key, model), and the per-minute buckets its headers describe
    (`shown_*`: the admitting counters themselves in `admission` mode and for the calendar-minute kind)."""

    __slots__ = ("requests", "shown_requests", "shown_tokens", "tokens")

    def __init__(
        self, rpm: int | None, tpm: int | None, window: float, now: float, kind: str = "bucket",
        header_mode: str = "minute",
    ) -> None:
        self.requests = _counter(kind, rpm, window, now)
        self.tokens = _counter(kind, tpm, window, now)
        minute = header_mode == "minute" and kind != "minute"
        self.shown_requests = Bucket(rpm, 60.0, now) if minute and rpm else self.requests
        self.shown_tokens = Bucket(tpm, 60.0, now) if minute and tpm else self.tokens

    def drain(self, now: float) -> None:
        """Bring every counter to `now`."""
        req, tok, shown_req, shown_tok = self.requests, self.tokens, self.shown_requests, self.shown_tokens
        if req is not None:
            req.drain(now)
            if shown_req is not req:
                shown_req.drain(now)  # type: ignore[union-attr]
        if tok is not None:
            tok.drain(now)
            if shown_tok is not tok:
                shown_tok.drain(now)  # type: ignore[union-attr]

    def charge(self, tokens: int) -> None:
        """Count one admitted request of `tokens` in every counter."""
        req, tok, shown_req, shown_tok = self.requests, self.tokens, self.shown_requests, self.shown_tokens
        if req is not None:
            req.used += 1
            if shown_req is not req:
                shown_req.used += 1  # type: ignore[union-attr]
        if tok is not None:
            tok.used += tokens
            if shown_tok is not tok:
                shown_tok.used += tokens  # type: ignore[union-attr]


class Limiter:
    """Per-(key, model) rpm/tpm counters with an injectable clock; also renders x-ratelimit-* headers.

    `rpm`/`tpm` apply to every model not in `model_limits` ({model: (rpm, tpm)}, None = no limit);
    `kind` is one of `LIMIT_KINDS`; `window` sizes the `bucket` kind's burst; `header_mode` (`HEADER_MODES`)
    says which counter the headers describe.
    """

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        window: float = 1.0,
        clock: Callable[[], float] | None = None,
        headers: bool = True,
        kind: str = "bucket",
        model_limits: Mapping[str, tuple[int | None, int | None]] | None = None,
        header_mode: str = "minute",
    ) -> None:
        import time

        if kind not in LIMIT_KINDS:
            raise ValueError(f"unknown limit kind {kind!r}; known: {', '.join(LIMIT_KINDS)}")
        if header_mode not in HEADER_MODES:
            raise ValueError(f"unknown header mode {header_mode!r}; known: {', '.join(HEADER_MODES)}")
        self.header_mode = header_mode
        self.rpm = rpm
        self.tpm = tpm
        self.window = window
        self.kind = kind
        self.clock = clock or time.monotonic
        self.model_limits = dict(model_limits or {})
        self.enabled = bool(rpm or tpm) or any(r or t for r, t in self.model_limits.values())
        self.send_headers = headers and self.enabled
        self._keys: dict[tuple[str, str], KeyLimits] = {}

    def limits_for(self, model: str) -> tuple[int | None, int | None]:
        """The (rpm, tpm) that apply to `model`."""
        return self.model_limits.get(model, (self.rpm, self.tpm))

    def _limits(self, key: str, model: str) -> KeyLimits:
        limits = self._keys.get((key, model))
        now = self.clock()
        if limits is None:
            rpm, tpm = self.model_limits.get(model, (self.rpm, self.tpm))
            limits = self._keys[(key, model)] = KeyLimits(rpm, tpm, self.window, now, self.kind, self.header_mode)
        else:
            limits.drain(now)
        return limits

    def admit(self, key: str, tokens: int, model: str = "") -> Decision:
        """Charge one request of `tokens` tokens to (`key`, `model`), or say why not (nothing charged then)."""
        if not self.enabled:
            return ADMITTED
        limits = self._limits(key, model)
        req, tok = limits.requests, limits.tokens
        if req is not None:
            wait = req.wait(1)
            if wait > 0:
                return Decision(False, "requests", wait, req.limit, math.ceil(req.used - _EPS), 1)
        if tok is not None:
            wait = tok.wait(tokens)
            if wait > 0:
                return Decision(False, "tokens", wait, tok.limit, math.ceil(tok.used - _EPS), tokens)
        limits.charge(tokens)
        return ADMITTED

    def minute_left(self) -> float:
        """Seconds from now to the end of the clock's current calendar minute (in (0, 60])."""
        return 60.0 - self.clock() % 60.0

    def headers(self, key: str, model: str = "") -> bytes:
        """The x-ratelimit-* header lines (CRLF-terminated) for (`key`, `model`), or b"" when off."""
        if not self.send_headers:
            return b""
        limits = self._limits(key, model)
        out = []
        req, tok = limits.shown_requests, limits.shown_tokens
        if req is not None:
            out.append(f"x-ratelimit-limit-requests: {req.limit}\r\n")
        if tok is not None:
            out.append(f"x-ratelimit-limit-tokens: {tok.limit}\r\n")
        if req is not None:
            out.append(f"x-ratelimit-remaining-requests: {req.remaining()}\r\n")
        if tok is not None:
            out.append(f"x-ratelimit-remaining-tokens: {tok.remaining()}\r\n")
        if req is not None and req.sends_reset:
            out.append(f"x-ratelimit-reset-requests: {format_duration(req.reset())}\r\n")
        if tok is not None and tok.sends_reset:
            out.append(f"x-ratelimit-reset-tokens: {format_duration(tok.reset())}\r\n")
        return "".join(out).encode()
