"""`Step`: what one concurrency level of a `batchchat tune` sweep achieved."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Step:
    """What one concurrency level achieved."""

    concurrency: int
    requests: int
    succeeded: int
    failed: int
    rate_limited_429: int
    seconds: float
    succeeded_per_second: float  # successes only: a level where most requests fail is not fast
    latency_ms_p50: float
    latency_ms_p95: float
    sustained_per_second: float = 0.0  # successes/s after the step's first 429 (0 without 429s)
    failed_per_second: float = 0.0  # shown beside the successes

    @property
    def error_rate(self) -> float:
        """Failed requests over all sent in the step."""
        return self.failed / self.requests if self.requests else 0.0

    @property
    def other_error_rate(self) -> float:
        """Failed requests other than 429s over all sent in the step."""
        return max(0, self.failed - self.rate_limited_429) / self.requests if self.requests else 0.0
