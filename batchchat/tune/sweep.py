"""The sweep of `batchchat tune`: what the server announces, then one step per concurrency level.

First one request per model of the sample goes alone (`probe_limits`): the `x-ratelimit-limit-*` headers of its
answer give that model's limits. Each step then sends the sample (cycled to `per_step` requests, fresh ids) at
one fixed concurrency with one attempt per request, so errors show as they are, and records throughput, latency
p50/p95, the error rate and the 429s. Where limits are known (announced, or given with `--rpm`/`--tpm`) the steps
keep to them, so what a level shows is what it does under the budget, and the sweep ends at the first level with
enough in flight to reach the limit: more cannot go faster.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import orjson

from batchchat.config.settings import RetryPolicy, RunSettings
from batchchat.errors import DeadEndpointError, ExitCode, FatalEndpointError, UsageError
from batchchat.http.outcomes import Fatal
from batchchat.input.parse import Job, parse_line
from batchchat.input.reader import iter_raw_lines
from batchchat.online.engine import Engine
from batchchat.pacing.headers import RateLimitHeaders
from batchchat.pacing.pacer import job_model
from batchchat.secrets import Redactor
from batchchat.tune.advice import HEADROOM, Limits, reach
from batchchat.tune.step import Step

DEFAULT_LEVELS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PROBE_MODELS = 8  # most models of a sample asked for their limits


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


async def probe_limits(settings: RunSettings, sample: list[Job]) -> dict[str, tuple[float | None, float | None]]:
    """{model: (rpm, tpm)} as the `x-ratelimit-limit-*` headers of one answer for each model of the sample say
    (a model whose answer announces none is left out; a limit of 0 or less, as some gateways send, is none)."""
    from batchchat.http.sender import open_sender

    announced: dict[str, tuple[float | None, float | None]] = {}
    firsts: dict[str, Job] = {}
    for job in sample:
        firsts.setdefault(job_model(job), job)
    sender = open_sender(settings.endpoint, 1, Redactor(settings.endpoint.api_key))
    try:
        for model, job in list(firsts.items())[:PROBE_MODELS]:
            outcome = await sender.send(job.url, orjson.dumps(job.body))
            if isinstance(outcome, Fatal):
                raise FatalEndpointError(outcome.message)
            headers = getattr(outcome, "headers", None)
            limits = RateLimitHeaders.parse(headers) if headers is not None else None
            if limits is None:
                continue
            rpm, tpm = (value if value is not None and value > 0 else None
                        for value in (limits.limit_requests, limits.limit_tokens))
            if rpm or tpm:
                announced[model] = (rpm, tpm)
    finally:
        await sender.aclose()
    return announced


def known_limits(settings: RunSettings, sample: list[Job],
                 announced: dict[str, tuple[float | None, float | None]]) -> Limits | None:
    """The limits the steps keep to: `--rpm`/`--tpm` when given, else what the server announced; None: none."""
    if settings.rpm or settings.tpm:
        models = {job_model(job) for job in sample}
        return Limits.of(sample, {model: (settings.rpm, settings.tpm) for model in models}, "--rpm/--tpm")
    if announced:
        return Limits.of(sample, announced, "the server's x-ratelimit headers")
    return None


def _paced(settings: RunSettings, limits: Limits | None) -> RunSettings:
    """`settings` keeping to `limits` (its own --rpm/--tpm, or the announced ones per model)."""
    if limits is None or settings.rpm or settings.tpm:
        return settings
    pairs = list(limits.per_model.items())
    if len(pairs) == 1:
        (_, (rpm, tpm)), = pairs
        return replace(settings, rpm=rpm, tpm=tpm)
    return replace(settings, model_limits=tuple((model, rpm, tpm) for model, (rpm, tpm) in pairs))


async def sweep(
    settings: RunSettings,
    sample: list[Job],
    levels: tuple[int, ...] = DEFAULT_LEVELS,
    per_step: int = 200,
    pause: float = 1.0,
    report: Callable[[Step], None] | None = None,
) -> tuple[list[Step], bool, Limits | None]:
    """Probe the limits, then run one step per concurrency level; returns the steps, whether the server sent
    rate-limit headers, and the limits known (announced or given; None: none).

    The sweep stops early once errors pass 5% (429s too, unless limits are known: then they are the limit's),
    once throughput has fallen for two steps in a row, or once a level has enough in flight to reach the limit.
    """
    announced = await probe_limits(settings, sample)
    limits = known_limits(settings, sample, announced)
    paced = _paced(settings, limits)
    steps: list[Step] = []
    headers_seen = bool(announced)
    with tempfile.TemporaryDirectory(prefix="batchchat-tune-") as tmp:
        directory = Path(tmp)
        for concurrency in levels:
            await anyio.sleep(pause)  # the probe's, or the last step's, load out of the way
            count = max(per_step, 4 * concurrency)
            step_settings = replace(
                paced, input=str(_step_file(directory, sample, concurrency, count)),
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
            errors = step.other_error_rate if limits is not None else step.error_rate
            if errors > 0.05 or _falling(steps):
                break
            if limits is not None and errors < 0.01 and reach(step) >= HEADROOM * limits.rate:
                break  # enough in flight for the limit: more cannot go faster
    return steps, headers_seen, limits


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
