"""Read OpenAI's `x-ratelimit-*` response headers: the limits, what remains of them, and when they reset."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """What one response said of the key's budgets (None where a header was missing or unreadable).

    `reset_*` are seconds until the server has released everything it counts (OpenAI's Go durations, `6m0s`,
    `250ms`); a gateway that counts calendar minutes (LiteLLM) sends none.
    """

    limit_requests: float | None = None
    limit_tokens: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests: float | None = None
    reset_tokens: float | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateLimitHeaders | None:
        """The rate-limit headers of a response, or None when it has none (vLLM, most proxies)."""
        if "x-ratelimit-limit-requests" not in headers and "x-ratelimit-limit-tokens" not in headers:
            return None
        return cls(
            _number(headers.get("x-ratelimit-limit-requests")),
            _number(headers.get("x-ratelimit-limit-tokens")),
            _number(headers.get("x-ratelimit-remaining-requests")),
            _number(headers.get("x-ratelimit-remaining-tokens")),
            duration(headers.get("x-ratelimit-reset-requests")),
            duration(headers.get("x-ratelimit-reset-tokens")),
        )


def duration(value: str | None) -> float | None:
    """Seconds of a Go-style duration (`1m30s`, `250ms`, `0s`) or a plain number of seconds; None if unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        return number if number >= 0 else None
    parts = _DURATION.findall(value)
    if not parts or "".join(a + b for a, b in parts) != value:
        return None
    return sum(float(amount) * _UNIT[unit] for amount, unit in parts)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= 0 else None
