"""What a job will cost, before it runs: per model and in total, a range from the expected cost to the ceiling.

- Prompt tokens: the same estimate the pacing uses (`batchchat.tokens.prompt_estimate`), none of them cached.
- Completion ceiling: each request's cap (`max_tokens` × n; 0 for embeddings), what it can cost at most.
- Expected completion: each request's cap × a ratio, learned from an existing output of the same job (completion
  tokens really used / their caps, see `learn_completion_ratio`): the ratio of requests of the same model and the
  same cap when the output had some (a small cap is used more fully than a large one), else the model's; without
  an earlier output it is `DEFAULT_COMPLETION_RATIO`, a guess that the range's upper end does not depend on.
- Cost online and via the Batch API, at the table's prices; None for a model whose price is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchchat.input.parse import Job
from batchchat.money.cost import usage_tokens, usd
from batchchat.money.prices import PER_TOKENS, Price, PriceTable
from batchchat.output.lines import iter_results
from batchchat.pacing.tokens import completion_cap, prompt_estimate

# Expected share of the completion cap an answer uses when no earlier output of the job says better.
DEFAULT_COMPLETION_RATIO = 0.5


@dataclass(slots=True)
class ModelEstimate:
    """The estimate for one model."""

    model: str
    price: Price | None
    requests: int = 0
    prompt_tokens: int = 0
    completion_ceiling: int = 0
    expected: float = 0.0  # completion tokens expected, summed over requests (cap × ratio each)
    ratio_learned: bool = False

    @property
    def expected_completion(self) -> int:
        """Completion tokens expected."""
        return round(self.expected)

    @property
    def completion_ratio(self) -> float:
        """The share of the ceiling expected to be used."""
        return self.expected / self.completion_ceiling if self.completion_ceiling else DEFAULT_COMPLETION_RATIO

    def cost(self, completion: int, batch: bool = False) -> float | None:
        """The cost of the prompts plus `completion` tokens; None when the price is unknown."""
        if self.price is None:
            return None
        rates = self.price.rates(batch)
        return (self.prompt_tokens * rates.input + completion * rates.output) / PER_TOKENS

    def costs(self) -> dict[str, float | None]:
        """Expected and ceiling cost, online and via the Batch API."""
        return {
            "online_expected_usd": self.cost(self.expected_completion),
            "online_ceiling_usd": self.cost(self.completion_ceiling),
            "batch_expected_usd": self.cost(self.expected_completion, batch=True),
            "batch_ceiling_usd": self.cost(self.completion_ceiling, batch=True),
        }


@dataclass(slots=True)
class Estimate:
    """Per-model estimates and their total; costs count only models with a known price."""

    models: dict[str, ModelEstimate] = field(default_factory=dict)
    prices_as_of: str | None = None

    @property
    def requests(self) -> int:
        """Requests in all."""
        return sum(m.requests for m in self.models.values())

    @property
    def unknown(self) -> list[str]:
        """Models without a price: their cost is not in the totals."""
        return sorted(name for name, m in self.models.items() if m.price is None)

    def total(self) -> dict[str, Any]:
        """Totals over every model: tokens over all of them, costs over those with a price (None if none has)."""
        known = [m for m in self.models.values() if m.price is not None]
        total: dict[str, Any] = {
            "requests": self.requests,
            "prompt_tokens": sum(m.prompt_tokens for m in self.models.values()),
            "completion_expected": sum(m.expected_completion for m in self.models.values()),
            "completion_ceiling": sum(m.completion_ceiling for m in self.models.values()),
        }
        for key in ("online_expected_usd", "online_ceiling_usd", "batch_expected_usd", "batch_ceiling_usd"):
            total[key] = sum(m.costs()[key] or 0.0 for m in known) if known else None
        return total

    def to_dict(self) -> dict[str, Any]:
        """For `--summary-json` and `validate --json`."""
        models = {}
        for name, m in sorted(self.models.items()):
            models[name] = {
                "requests": m.requests,
                "prompt_tokens": m.prompt_tokens,
                "completion_expected": m.expected_completion,
                "completion_ceiling": m.completion_ceiling,
                "completion_ratio": m.completion_ratio,
                "ratio_learned": m.ratio_learned,
                "price_known": m.price is not None,
                **m.costs(),
            }
        return {"currency": "USD", "prices_as_of": self.prices_as_of, "models": models, "total": self.total(),
                "unknown_price": self.unknown}

    def render(self) -> str:
        """A compact table, a total line, and a note on where the expected completions come from."""
        header = ("model", "requests", "prompt tok", "completion tok", "cost online", "cost batch")
        rows = [header]
        for name, m in sorted(self.models.items()):
            c = m.costs()
            rows.append((name, f"{m.requests:,}", f"{m.prompt_tokens:,}",
                         _span(m.expected_completion, m.completion_ceiling, _count),
                         _money(c["online_expected_usd"], c["online_ceiling_usd"]),
                         _money(c["batch_expected_usd"], c["batch_ceiling_usd"])))
        t = self.total()
        rows.append(("total", f"{t['requests']:,}", f"{t['prompt_tokens']:,}",
                     _span(t["completion_expected"], t["completion_ceiling"], _count),
                     _money(t["online_expected_usd"], t["online_ceiling_usd"]),
                     _money(t["batch_expected_usd"], t["batch_ceiling_usd"])))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                           for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        notes = []
        learned = [f"{n} {m.completion_ratio:.2f}" for n, m in sorted(self.models.items()) if m.ratio_learned]
        guessed = [n for n, m in sorted(self.models.items()) if not m.ratio_learned and m.completion_ceiling]
        if learned:
            notes.append(f"expected completion learned from a previous output (share of the cap used): "
                         f"{', '.join(learned)}")
        if guessed:
            notes.append(f"expected completion guessed at {DEFAULT_COMPLETION_RATIO:.0%} of the cap for: "
                         f"{', '.join(guessed)}")
        if self.unknown:
            notes.append(f"unknown price for: {', '.join(self.unknown)} (not in the cost; add it with --prices FILE)")
        notes.append(f"prices as of {self.prices_as_of or 'an unknown date'}; cached prompt tokens not assumed")
        return "\n".join(lines + notes)


def _count(n: int) -> str:
    return f"{n:,}"


def _span(low: Any, high: Any, fmt: Any) -> str:
    return fmt(high) if low == high else f"{fmt(low)}..{fmt(high)}"


def _money(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "unknown"
    return usd(high) if usd(low) == usd(high) else f"{usd(low)}..{usd(high)}"


class CompletionRatios(dict[str, float]):
    """What `learn_completion_ratio` learns: per model, completion tokens used / caps (the mapping itself), and the
    same per (model, cap) in `by_cap`."""

    def __init__(self, by_model: dict[str, float] | None = None,
                 by_cap: dict[tuple[str, int], float] | None = None) -> None:
        super().__init__(by_model or {})
        self.by_cap = by_cap or {}

    def ratio(self, model: str, cap: int) -> float | None:
        """The ratio for a request of `model` with completion cap `cap`; None when nothing was learned for it."""
        return self.by_cap.get((model, cap), self.get(model))


def estimate_jobs(jobs: Iterable[Job], table: PriceTable, learned: Mapping[str, float] | None = None) -> Estimate:
    """Estimate what `jobs` will cost, per model. `learned` maps a model to the share of its completion cap its
    answers used before (`learn_completion_ratio`'s result, which also refines it per cap); other models get
    `DEFAULT_COMPLETION_RATIO`."""
    ratios = learned if isinstance(learned, CompletionRatios) else CompletionRatios(dict(learned or {}))
    estimate = Estimate(prices_as_of=table.as_of)
    for job in jobs:
        model = str(job.body.get("model"))
        m = estimate.models.get(model)
        if m is None:
            m = estimate.models[model] = ModelEstimate(model, table.price_for(model))
        cap = completion_cap(job)
        m.requests += 1
        m.prompt_tokens += prompt_estimate(job)
        m.completion_ceiling += cap
        if cap:
            ratio = ratios.ratio(model, cap)
            if ratio is not None:
                m.ratio_learned = True
            m.expected += cap * (DEFAULT_COMPLETION_RATIO if ratio is None else ratio)
    return estimate


def learn_completion_ratio(output_path: str | Path, jobs: Mapping[str, Job | tuple[str, int]]) -> CompletionRatios:
    """Per model, the completion tokens answers really used / their caps, from an existing output of the same job
    (a dict of model -> ratio, with the same per (model, cap) in its `by_cap`).

    `jobs` maps a custom_id to its `Job` (or to `(model, completion cap)`). Lines that failed, carry no usage, or
    whose id is not in `jobs` are skipped, as are requests without a completion (embeddings). A missing output
    file gives an empty result.
    """
    path = Path(output_path)
    if not path.exists():
        return CompletionRatios()
    used: dict[tuple[str, int], int] = {}
    caps: dict[tuple[str, int], int] = {}
    for line in iter_results(path):
        if line.get("error") is not None:
            continue
        job = jobs.get(line.get("custom_id"))
        if job is None:
            continue
        model, cap = (str(job.body.get("model")), completion_cap(job)) if isinstance(job, Job) else job
        usage = line.get("usage")
        if not isinstance(usage, dict):
            body = (line.get("response") or {}).get("body")
            usage = body.get("usage") if isinstance(body, dict) else None
        if cap <= 0 or not isinstance(usage, dict):
            continue
        key = (model, cap)
        used[key] = used.get(key, 0) + min(usage_tokens(usage).completion, cap)
        caps[key] = caps.get(key, 0) + cap
    by_model_used: dict[str, int] = {}
    by_model_caps: dict[str, int] = {}
    for (model, _), total in caps.items():
        by_model_caps[model] = by_model_caps.get(model, 0) + total
    for (model, _), total in used.items():
        by_model_used[model] = by_model_used.get(model, 0) + total
    return CompletionRatios({model: by_model_used[model] / by_model_caps[model] for model in by_model_caps},
                            {key: used[key] / caps[key] for key in caps})
