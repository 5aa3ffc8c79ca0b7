"""`batchchat tune`: sweep concurrency against an endpoint with a sample of the job, and recommend flags.

Each step sends the sample (cycled to `per_step` requests, fresh ids) at one fixed concurrency with one
attempt per request, so errors show as they are; it records throughput, latency p50/p95, the error rate and
the 429s. The recommendation is the smallest concurrency within 5% of the best throughput whose errors stay
under 1%; where the server rate-limits without saying so (429s but no `x-ratelimit-*` headers), also an
`--rpm` at 90% of the rate the server sustained while refusing: the successes per second after a step's
first 429, when the server's burst allowance is known to be spent.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import orjson

from batchchat.config.settings import RetryPolicy, RunSettings
from batchchat.errors import DeadEndpointError, ExitCode, FatalEndpointError, UsageError
from batchchat.input.parse import Job, parse_line
from batchchat.input.reader import iter_raw_lines
from batchchat.online.engine import Engine

DEFAULT_LEVELS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


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


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The flags `tune` suggests, and why."""

    concurrency: int
    rpm: int | None
    reason: str

    def flags(self) -> str:
        """As command-line flags."""
        return f"--concurrency {self.concurrency}" + (f" --rpm {self.rpm}" if self.rpm else "")


def load_sample(path: Path, settings: RunSettings, size: int) -> list[Job]:
    """The first `size` valid requests of a job file."""
    jobs: list[Job] = []
    for line_no, raw in iter_raw_lines(path):
        item = parse_line(raw, line_no, settings.defaults)
        if isinstance(item, Job):
            jobs.append(item)
            if len(jobs) >= size:
                break
    if not jobs:
        raise UsageError(f"{path}: no valid request to sample")
    return jobs


def _step_file(directory: Path, sample: list[Job], concurrency: int, count: int) -> Path:
    path = directory / f"step-{concurrency}.jsonl"
    with path.open("wb") as handle:
        for i in range(count):
            job = sample[i % len(sample)]
            line = {"custom_id": f"tune-{concurrency}-{i}", "url": job.url, "body": job.body}
            handle.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
    return path


async def sweep(
    settings: RunSettings,
    sample: list[Job],
    levels: tuple[int, ...] = DEFAULT_LEVELS,
    per_step: int = 200,
    pause: float = 1.0,
    report: Callable[[Step], None] | None = None,
) -> tuple[list[Step], bool]:
    """Run one step per concurrency level; returns the steps and whether the server sent rate-limit headers.

    The sweep stops early once errors pass 5% or throughput has fallen for two steps in a row.
    """
    steps: list[Step] = []
    headers_seen = False
    with tempfile.TemporaryDirectory(prefix="batchchat-tune-") as tmp:
        directory = Path(tmp)
        for concurrency in levels:
            count = max(per_step, 4 * concurrency)
            step_settings = replace(
                settings, input=str(_step_file(directory, sample, concurrency, count)),
                output=directory / f"step-{concurrency}.results.jsonl", concurrency=concurrency, adapt="off",
                progress="off", summary_json=None, handle_signals=False,
                retry=RetryPolicy(max_attempts=1, deadline=settings.retry.deadline),
            )
            finished: list[tuple[float, str | None]] = []
            engine = Engine(step_settings, echo=lambda _text: None, on_result=_recorder(finished))
            summary = await engine.run()
            if summary.exit_code in (ExitCode.FATAL, ExitCode.DEAD_ENDPOINT):  # no level can do better
                error = DeadEndpointError if summary.exit_code == ExitCode.DEAD_ENDPOINT else FatalEndpointError
                raise error(summary.stopped or "the endpoint refused the sweep")
            headers_seen = headers_seen or bool(engine.headers_seen)
            wall = max(summary.wall_seconds, 1e-9)
            step = Step(concurrency, summary.total, summary.succeeded, summary.failed, summary.rate_limited_429,
                        summary.wall_seconds, round(summary.succeeded / wall, 1), summary.latency_ms_p50,
                        summary.latency_ms_p95, _rate_after_first_429(finished), round(summary.failed / wall, 1))
            steps.append(step)
            if report is not None:
                report(step)
            if step.error_rate > 0.05 or _falling(steps):
                break
            await anyio.sleep(pause)
    return steps, headers_seen


def _recorder(finished: list[tuple[float, str | None]]) -> Callable[[dict[str, Any]], None]:
    def record(line: dict[str, Any]) -> None:
        finished.append((time.monotonic(), line["error"]["code"] if line["error"] else None))

    return record


def _rate_after_first_429(finished: list[tuple[float, str | None]]) -> float:
    """Successes per second from the first 429 to the end: the rate the server refills at."""
    first = next((i for i, (_when, code) in enumerate(finished) if code == "rate_limited"), None)
    if first is None or len(finished) - first < 4:
        return 0.0
    start, end = finished[first][0], finished[-1][0]
    successes = sum(1 for _when, code in finished[first:] if code is None)
    return successes / max(end - start, 1e-6)


def _falling(steps: list[Step]) -> bool:
    if len(steps) < 3:
        return False
    a, b, c = (s.succeeded_per_second for s in steps[-3:])
    return c < b < a


def recommend(steps: list[Step], headers_seen: bool) -> Recommendation:
    """The smallest concurrency within 5% of the best clean throughput (errors under 1%)."""
    clean = [s for s in steps if s.error_rate < 0.01] or [min(steps, key=lambda s: s.error_rate)]
    best = max(s.succeeded_per_second for s in clean)
    choice = min((s for s in clean if s.succeeded_per_second >= 0.95 * best), key=lambda s: s.concurrency)
    rpm = None
    reason = f"{choice.succeeded_per_second:,.1f} requests/s at {choice.concurrency} in flight, within 5% of the best"
    limited = [s for s in steps if s.rate_limited_429]
    if limited and not headers_seen:
        rpm = int(0.9 * 60 * min(s.sustained_per_second for s in limited))
        reason += "; the server answers 429 without x-ratelimit headers: pace at 90% of the rate it sustained"
    return Recommendation(choice.concurrency, rpm, reason)


def render_table(steps: list[Step]) -> str:
    """The sweep as a text table."""
    rows = ["concurrency  succeeded/s  errors/s  p50 ms  p95 ms  errors  429s",
            "-----------  -----------  --------  ------  ------  ------  ----"]
    for s in steps:
        rows.append(f"{s.concurrency:>11}  {s.succeeded_per_second:>11,.1f}  {s.failed_per_second:>8,.1f}  "
                    f"{s.latency_ms_p50:>6,.0f}  {s.latency_ms_p95:>6,.0f}  {100 * s.error_rate:>5.1f}%  "
                    f"{s.rate_limited_429:>4}")
    return "\n".join(rows)


def plot(steps: list[Step], path: Path, recommendation: Recommendation | None = None) -> bool:
    """Write throughput, latency and error rate against concurrency as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    xs = [s.concurrency for s in steps]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    top.plot(xs, [s.succeeded_per_second for s in steps], "o-", label="succeeded/s")
    top.plot(xs, [s.failed_per_second for s in steps], "x--", color="orange", label="errors/s")
    top.set_ylabel("requests/s")
    if recommendation is not None:
        top.axvline(recommendation.concurrency, color="green", linestyle="--",
                    label=f"recommended {recommendation.concurrency}")
    top.legend(loc="upper left")
    errors = top.twinx()
    errors.plot(xs, [100 * s.error_rate for s in steps], "x:", color="red", label="errors %")
    errors.set_ylabel("errors %", color="red")
    bottom.plot(xs, [s.latency_ms_p50 for s in steps], "o-", label="p50")
    bottom.plot(xs, [s.latency_ms_p95 for s in steps], "s-", label="p95")
    bottom.set_ylabel("latency ms")
    bottom.set_xlabel("requests in flight (concurrency)")
    bottom.set_xscale("log", base=2)
    bottom.legend(loc="upper left")
    fig.suptitle("batchchat tune")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def steps_json(steps: list[Step], recommendation: Recommendation) -> bytes:
    """The sweep and the recommendation as JSON."""
    data: dict[str, Any] = {"steps": [asdict(s) | {"error_rate": s.error_rate} for s in steps],
                            "recommendation": asdict(recommendation) | {"flags": recommendation.flags()}}
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)
