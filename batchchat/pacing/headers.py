"""Read OpenAI's `x-ratelimit-*` response headers: the limits and what remains of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """What one response said of the key's budgets (None where a header was missing or unreadable)."""

    limit_requests: float | None = None
    limit_tokens: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None

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
        )


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= 0 else None

