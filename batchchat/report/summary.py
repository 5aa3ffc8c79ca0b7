"""The summary of a run, frozen from its counters: printed at the end and written by `--summary-json`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from batchchat.report.counters import Counters


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
    left_for_later: int = 0  # lines beyond --limit
    cost: dict[str, Any] | None = None  # money.guard.Spending.to_dict(): cost by model, the cap
    endpoint: str = ""  # the URL the requests went to (the first of each endpoint the job used)
    cached: int = 0  # of `succeeded`: written from the request cache (--cache), not sent

    @classmethod
    def from_counters(
        cls, counters: Counters, input_name: str, output: str, exit_code: int, stopped: str | None,
        endpoint: str = "",
    ) -> Summary:
        """Freeze the live counters into a summary."""
        wall = max(time.monotonic() - counters.started, 1e-9)
        latencies = counters.latencies
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
            latency_ms_p50=round(latencies.percentile(0.50) * 1000.0, 1),
            latency_ms_p95=round(latencies.percentile(0.95) * 1000.0, 1),
            latency_ms_p99=round(latencies.percentile(0.99) * 1000.0, 1),
            prompt_estimate_error_pct=error,
            errors_by_code=dict(counters.errors.most_common()),
            exit_code=exit_code,
            stopped=stopped,
            left_for_later=counters.left,
            endpoint=endpoint,
            cached=counters.cached,
        )

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready data."""
        return asdict(self)

    def render(self) -> str:
        """The summary as a few lines for a person."""
        lines = [
            f"batchchat: {self.input} -> {self.output}",
            *([f"  endpoint   {self.endpoint}"] if self.endpoint else []),
            f"  requests   {self.total:,} this run: {self.succeeded:,} succeeded"
            + (f" ({self.cached:,} from the cache, not sent)" if self.cached else "") + f", {self.failed:,} failed"
            + (f", {self.not_finished:,} not finished" if self.not_finished else "")
            + (f" ({self.skipped_already_done:,} already done, skipped)" if self.skipped_already_done else "")
            + (f"; {self.left_for_later:,} left for a later run (--limit)" if self.left_for_later else ""),
            f"  tokens     {self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion",
            f"  time       {self.wall_seconds:,.2f} s, {self.requests_per_second:,.1f} requests/s, "
            f"{self.tokens_per_minute:,.0f} tokens/min",
            f"  latency    p50 {self.latency_ms_p50:,.0f} ms, p95 {self.latency_ms_p95:,.0f} ms, "
            f"p99 {self.latency_ms_p99:,.0f} ms",
            f"  attempts   {self.attempts:,} ({self.retries:,} retries, {self.rate_limited_429:,} answered 429)",
        ]
        if self.prompt_estimate_error_pct is not None:
            error = self.prompt_estimate_error_pct
            direction = "over" if error > 0 else "under"
            lines.append(f"  estimate   prompt tokens {direction}-estimated by {abs(error):.1f}% (estimate vs usage)"
                         if error else "  estimate   prompt tokens estimated exactly (estimate vs usage)")
        if self.cost is not None:
            from batchchat.money.guard import cost_lines

            lines.extend(cost_lines(self.cost))
        if self.errors_by_code:
            lines.append("  errors     " + ", ".join(f"{code} {n:,}" for code, n in self.errors_by_code.items()))
        if self.stopped:
            lines.append(f"  stopped    {self.stopped}")
        lines.append(f"  exit code  {self.exit_code}")
        return "\n".join(lines)
