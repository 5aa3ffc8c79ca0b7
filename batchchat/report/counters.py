"""Live figures of a run, updated as results land on disk, and the latency histogram they keep."""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field


class LatencyHistogram:
    """Latencies in log-spaced buckets, 0.5% wide, from 0.1 ms to an hour: percentiles in 14 KB at any count.

    Keeping every latency cost 32 bytes a request at the end of a run (a million of them sorted as floats).
    """

    __slots__ = ("_counts", "count")

    LOWEST = 1e-4  # seconds: faster answers share the first bucket
    RATIO = 1.005  # each bucket 0.5% wider than the last: a percentile is within 0.25% of the true value
    BUCKETS = 3500  # up to LOWEST * RATIO**BUCKETS = 3,900 s
    _SCALE = 1.0 / math.log(RATIO)

    def __init__(self) -> None:
        self._counts = array("Q", bytes(8 * self.BUCKETS))
        self.count = 0

    def add(self, seconds: float) -> None:
        """Count one latency."""
        index = int(math.log(seconds / self.LOWEST) * self._SCALE) if seconds > self.LOWEST else 0
        self._counts[min(index, self.BUCKETS - 1)] += 1
        self.count += 1

    def percentile(self, q: float) -> float:
        """The latency (seconds) at quantile `q` (0-1), as the nearest-rank value of the sorted latencies; 0 if none."""
        if not self.count:
            return 0.0
        rank = min(self.count - 1, max(0, round(q * (self.count - 1))))
        seen = 0
        for index, count in enumerate(self._counts):
            seen += count
            if seen > rank:
                return self.LOWEST * self.RATIO ** (index + 0.5) if index else self.LOWEST
        raise AssertionError("unreachable: the counts add up to self.count")


@dataclass(slots=True)
class Counters:
    """Live figures of a run; `done` figures move only once a result is written to the output."""

    total: int = 0  # requests this run must finish (valid and invalid lines not already done)
    skipped: int = 0  # already done in the output: not sent again
    left: int = 0  # lines with work to do beyond --limit: left for a later run
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    in_flight: int = 0
    cached: int = 0  # succeeded from the request cache (--cache), not sent: in `succeeded` too
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_prompt_tokens: int = 0  # estimates of the answered requests ...
    estimated_prompt_actual: int = 0  # ... and what their answers' usage said: the estimate's error
    errors: Counter[str] = field(default_factory=Counter)
    latencies: LatencyHistogram = field(default_factory=LatencyHistogram)
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        """Requests finished this run (succeeded or failed)."""
        return self.succeeded + self.failed
