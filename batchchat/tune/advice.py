"""What `batchchat tune` recommends, and why each level was or was not chosen.

**Limits known** (announced in the server's `x-ratelimit-limit-*` headers, or given with `--rpm`/`--tpm`): the
limit bounds the run, not the level, so the advice is the limits themselves (`--rpm`/`--tpm`; `--model-limit`
per model when the sample's models differ) and the concurrency the limit needs at the latency the server showed:
Little's law, the limit's rate x the p95 latency x `HEADROOM`, at the first level whose requests in flight can
carry the limit (concurrency / p50 >= rate). A level's 429s are then the limit's (the budget paces them away),
not the level's; errors other than 429 over 1% exclude a level, and so does too little in flight.

**No limit known**: the smallest concurrency within 5% of the best throughput whose errors stay under 1%; where
the server answers 429 without saying its limits, also an `--rpm` at 90% of the rate it sustained while
refusing: the successes per second after a step's first 429, when its burst allowance is known to be spent.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batchchat.input.parse import Job
from batchchat.pacing.pacer import job_model
from batchchat.pacing.tokens import completion_cap, prompt_estimate

if TYPE_CHECKING:
    from batchchat.tune.step import Step

HEADROOM = 1.25  # in flight beyond what the limit needs at the p95 latency: latency varies, the budget binds
CLEAN = 0.01  # a level with more errors (429s aside when limits are known) is excluded
NEAR_BEST = 0.95  # without limits: levels within 5% of the best throughput count as as good


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits per model a sweep keeps to, and the requests/s they allow the sample's mix of models."""

    per_model: Mapping[str, tuple[float | None, float | None]]  # model -> (rpm, tpm)
    rate: float  # requests/s of the sample's mix when the first model reaches its limit
    tokens_per_request: float  # the mean up-front charge: prompt estimate + completion cap x n
    source: str  # where they come from, as the advice says it

    @classmethod
    def of(cls, sample: list[Job], per_model: Mapping[str, tuple[float | None, float | None]],
           source: str) -> Limits | None:
        """The limits for `sample` (None when none binds any of its models)."""
        counts = Counter(job_model(job) for job in sample)
        charges: dict[str, int] = defaultdict(int)
        for job in sample:
            charges[job_model(job)] += prompt_estimate(job) + completion_cap(job)
        rate = math.inf
        for model, count in counts.items():
            rpm, tpm = per_model.get(model, (None, None))
            charge = max(1.0, charges[model] / count)
            own = min(rpm / 60.0 if rpm else math.inf, tpm / 60.0 / charge if tpm else math.inf)
            rate = min(rate, own * len(sample) / count)  # the mix reaches this model's limit at this total rate
        if math.isinf(rate):
            return None
        mean = sum(charges.values()) / len(sample)
        return cls({m: per_model[m] for m in counts if m in per_model}, rate, mean, source)

    def describe(self) -> str:
        """"1,200 requests/min and 150,000 tokens/min (the server's x-ratelimit headers)"."""
        parts = []
        alike = len(set(self.per_model.values())) == 1
        for model, (rpm, tpm) in self.per_model.items():
            given = " and ".join(f"{value:,.0f} {unit}/min" for value, unit in ((rpm, "requests"), (tpm, "tokens"))
                                 if value)
            parts.append(f"{given} for {model}" if len(self.per_model) > 1 and not alike else given)
            if alike:
                break
        each = " for each model" if alike and len(self.per_model) > 1 else ""
        return f"{'; '.join(parts)}{each} ({self.source})"


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The flags `tune` suggests, why, and what each level showed."""

    concurrency: int
    rpm: int | None
    reason: str
    tpm: int | None = None
    model_limits: tuple[tuple[str, int | None, int | None], ...] = ()  # several models' own limits
    verdicts: tuple[tuple[int, str], ...] = field(default=())  # (level, why it was or was not chosen)

    def flags(self) -> str:
        """As command-line flags."""
        flags = f"--concurrency {self.concurrency}"
        flags += f" --rpm {self.rpm}" if self.rpm else ""
        flags += f" --tpm {self.tpm}" if self.tpm else ""
        for model, rpm, tpm in self.model_limits:
            flags += f" --model-limit {model}={rpm or ''},{tpm or ''}"
        return flags


def reach(step: Step) -> float:
    """Requests/s the level's requests in flight can carry at its p50 latency (Little's law; 0: none answered)."""
    if not step.succeeded:
        return 0.0
    return step.concurrency / (step.latency_ms_p50 / 1000.0) if step.latency_ms_p50 > 0 else math.inf


def recommend(steps: list[Step], headers_seen: bool, limits: Limits | None = None) -> Recommendation:
    """The flags for the job (see the module docstring)."""
    if limits is not None:
        return _against_limits(steps, limits)
    return _by_throughput(steps, headers_seen)


def _against_limits(steps: list[Step], limits: Limits) -> Recommendation:
    rate = limits.rate
    verdicts: list[tuple[int, str]] = []
    enough: Step | None = None
    for step in steps:
        carried = reach(step)
        if step.other_error_rate >= CLEAN:
            verdicts.append((step.concurrency, f"excluded: {100 * step.other_error_rate:.1f}% errors other than "
                                               "429"))
        elif carried < rate:
            verdicts.append((step.concurrency, f"excluded: too few in flight: at p50 {step.latency_ms_p50:,.0f} ms "
                                               f"they carry at most {carried:,.1f} requests/s of the "
                                               f"{rate:,.1f} the limit allows"))
        else:
            note = (f"; its {step.rate_limited_429:,} 429s were the limit's, which the budget keeps to"
                    if step.rate_limited_429 else "")
            verdicts.append((step.concurrency, f"reaches the limit: {step.concurrency} in flight carry "
                                               f"{min(carried, 1e9):,.1f} requests/s at p50 "
                                               f"{step.latency_ms_p50:,.0f} ms{note}"))
            if enough is None:
                enough = step
    per_model = list(limits.per_model.items())
    if len({pair for _, pair in per_model}) == 1:  # one model, or all alike: --rpm/--tpm give each its own
        (_, (rpm, tpm)), *_ = per_model
        flags: dict[str, object] = {"rpm": _whole(rpm), "tpm": _whole(tpm)}
    else:
        flags = {"rpm": None, "model_limits": tuple((m, _whole(r), _whole(t)) for m, (r, t) in per_model)}
    clean = [s for s in steps if s.other_error_rate < CLEAN and s.succeeded]
    if enough is None:
        best = max(clean or steps, key=lambda s: s.succeeded_per_second)
        reason = (f"the limits are {limits.describe()}: {rate:,.1f} requests/s, but no level tried reached them "
                  f"(the best, {best.concurrency} in flight, carries {min(reach(best), 1e9):,.1f}/s): try higher "
                  "--levels, or the server is the bottleneck")
        return Recommendation(best.concurrency, reason=reason, verdicts=tuple(verdicts), **flags)  # type: ignore[arg-type]
    latency = enough.latency_ms_p95 / 1000.0
    concurrency = max(1, math.ceil(rate * latency * HEADROOM))
    reason = (f"the limits are {limits.describe()}: {rate:,.1f} requests/s at {limits.tokens_per_request:,.0f} "
              f"tokens a request; at the p95 latency of {enough.latency_ms_p95:,.0f} ms that needs {concurrency} in "
              f"flight ({rate:,.1f}/s x {latency:.3g} s x {HEADROOM:g})")
    return Recommendation(concurrency, reason=reason, verdicts=tuple(verdicts), **flags)  # type: ignore[arg-type]


def _by_throughput(steps: list[Step], headers_seen: bool) -> Recommendation:
    clean = [s for s in steps if s.error_rate < CLEAN] or [min(steps, key=lambda s: s.error_rate)]
    best = max(s.succeeded_per_second for s in clean)
    choice = min((s for s in clean if s.succeeded_per_second >= NEAR_BEST * best), key=lambda s: s.concurrency)
    rpm = None
    reason = f"{choice.succeeded_per_second:,.1f} requests/s at {choice.concurrency} in flight, within 5% of the best"
    limited = [s for s in steps if s.rate_limited_429]
    if limited and not headers_seen:
        rpm = int(0.9 * 60 * min(s.sustained_per_second for s in limited))
        reason += "; the server answers 429 without x-ratelimit headers: pace at 90% of the rate it sustained"
    verdicts: list[tuple[int, str]] = []
    for step in steps:
        if step is choice:
            why = "chosen: the smallest level within 5% of the best throughput with errors under 1%"
        elif step not in clean:
            why = f"excluded: {100 * step.error_rate:.1f}% errors"
        elif step.succeeded_per_second < NEAR_BEST * best:
            why = f"excluded: {step.succeeded_per_second:,.1f} requests/s, more than 5% below the best {best:,.1f}"
        else:
            why = "as fast, with more in flight than needed"
        verdicts.append((step.concurrency, why))
    return Recommendation(choice.concurrency, rpm, reason, verdicts=tuple(verdicts))


def _whole(value: float | None) -> int | None:
    return int(value) if value else None
