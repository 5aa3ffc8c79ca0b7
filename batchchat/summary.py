"""Run counters (updated as results land on disk) and the summary made from them."""

from __future__ import annotations

import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Counters:
    """Live figures of a run; `done` figures move only once a result is written to the output."""

    total: int = 0  # requests this run must finish (valid and invalid lines not already done)
    skipped: int = 0  # already done in the output: not sent again
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_prompt_tokens: int = 0  # estimates of the answered requests ...
    estimated_prompt_actual: int = 0  # ... and what their answers' usage said: the estimate's error
    errors: Counter[str] = field(default_factory=Counter)
    latencies: array = field(default_factory=lambda: array("f"))
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        """Requests finished this run (succeeded or failed)."""
        return self.succeeded + self.failed


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass(slots=True)
class Summary:
    """The outcome of a run, as printed at the end and written by `--summary-json`."""

    input: str
    output: str
    total: int
    succeeded: int
    failed: int
    not_finished: int
    skipped_already_done: int
    attempts: int
    retries: int
    rate_limited_429: int
    prompt_tokens: int
    completion_tokens: int
    wall_seconds: float
    requests_per_second: float
    tokens_per_minute: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_p99: float
    prompt_estimate_error_pct: float | None
    errors_by_code: dict[str, int]
    exit_code: int
    stopped: str | None = None

    @classmethod
    def from_counters(
        cls, counters: Counters, input_name: str, output: str, exit_code: int, stopped: str | None
    ) -> Summary:
        """Freeze the live counters into a summary."""
        wall = max(time.monotonic() - counters.started, 1e-9)
        latencies = sorted(counters.latencies)
        tokens = counters.prompt_tokens + counters.completion_tokens
        error = None
        if counters.estimated_prompt_actual:
            error = round(100.0 * (counters.estimated_prompt_tokens - counters.estimated_prompt_actual)
                          / counters.estimated_prompt_actual, 1)
        return cls(
            input=input_name,
            output=output,
            total=counters.total,
            succeeded=counters.succeeded,
            failed=counters.failed,
            not_finished=max(0, counters.total - counters.done),
            skipped_already_done=counters.skipped,
            attempts=counters.attempts,
            retries=counters.retries,
            rate_limited_429=counters.rate_limited,
            prompt_tokens=counters.prompt_tokens,
            completion_tokens=counters.completion_tokens,
            wall_seconds=round(wall, 3),
            requests_per_second=round(counters.done / wall, 1),
            tokens_per_minute=round(tokens / wall * 60.0, 1),
            latency_ms_p50=round(_percentile(latencies, 0.50) * 1000.0, 1),
            latency_ms_p95=round(_percentile(latencies, 0.95) * 1000.0, 1),
            latency_ms_p99=round(_percentile(latencies, 0.99) * 1000.0, 1),
            prompt_estimate_error_pct=error,
            errors_by_code=dict(counters.errors.most_common()),
            exit_code=exit_code,
            stopped=stopped,
        )

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready data."""
        return asdict(self)

    def render(self) -> str:
        """The summary as a few lines for a person."""
        lines = [
            f"batchchat: {self.input} -> {self.output}",
            f"  requests   {self.total:,} this run: {self.succeeded:,} succeeded, {self.failed:,} failed"
            + (f", {self.not_finished:,} not finished" if self.not_finished else "")
            + (f" ({self.skipped_already_done:,} already done, skipped)" if self.skipped_already_done else ""),
            f"  tokens     {self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion",
            f"  time       {self.wall_seconds:,.2f} s, {self.requests_per_second:,.1f} requests/s, "
            f"{self.tokens_per_minute:,.0f} tokens/min",
            f"  latency    p50 {self.latency_ms_p50:,.0f} ms, p95 {self.latency_ms_p95:,.0f} ms, "
            f"p99 {self.latency_ms_p99:,.0f} ms",
            f"  attempts   {self.attempts:,} ({self.retries:,} retries, {self.rate_limited_429:,} answered 429)",
        ]
        if self.prompt_estimate_error_pct is not None:
            lines.append(f"  estimate   prompt tokens estimated {self.prompt_estimate_error_pct:+.1f}% off")
        if self.errors_by_code:
            lines.append("  errors     " + ", ".join(f"{code} {n:,}" for code, n in self.errors_by_code.items()))
        if self.stopped:
            lines.append(f"  stopped    {self.stopped}")
        lines.append(f"  exit code  {self.exit_code}")
        return "\n".join(lines)
