"""What usage costs: one answer's cost, a request's worst case before it is sent, and a run's tally by model.

Usage shapes (OpenAI's): chat and completions give `prompt_tokens` / `completion_tokens`, with cached prompt
tokens in `prompt_tokens_details.cached_tokens`; the Responses API gives `input_tokens` / `output_tokens`, with
`input_tokens_details.cached_tokens`; embeddings give `prompt_tokens` only. Cached tokens are part of the prompt
tokens and are charged the cached price; reasoning tokens are part of the completion tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from batchchat.money.prices import PER_TOKENS, Price, PriceTable


@dataclass(frozen=True, slots=True)
class UsageTokens:
    """The billed tokens of one usage object: prompt (cached included), cached, completion."""

    prompt: int
    cached: int
    completion: int


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_tokens(usage: dict[str, Any] | None) -> UsageTokens:
    """The tokens of a usage object of any endpoint (zeros for anything missing or malformed)."""
    if not isinstance(usage, dict):
        return UsageTokens(0, 0, 0)
    if "prompt_tokens" in usage:
        prompt, details = usage.get("prompt_tokens"), usage.get("prompt_tokens_details")
    else:
        prompt, details = usage.get("input_tokens"), usage.get("input_tokens_details")
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    prompt = _int(prompt)
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return UsageTokens(prompt, min(cached, prompt), _int(completion))


@dataclass(frozen=True, slots=True)
class CostParts:
    """A cost in USD, split: uncached prompt, cached prompt, completion."""

    prompt: float
    cached: float
    completion: float

    @property
    def total(self) -> float:
        """The whole cost."""
        return self.prompt + self.cached + self.completion


def tokens_cost(price: Price, tokens: UsageTokens, batch: bool = False) -> CostParts:
    """The cost of `tokens` at `price` (online, or the Batch API's price)."""
    rates = price.rates(batch)
    return CostParts(
        (tokens.prompt - tokens.cached) * rates.input / PER_TOKENS,
        tokens.cached * rates.cached_input / PER_TOKENS,
        tokens.completion * rates.output / PER_TOKENS,
    )


def usage_cost(price: Price, usage: dict[str, Any] | None, batch: bool = False) -> float:
    """The cost in USD of one answer's `usage` at `price`."""
    return tokens_cost(price, usage_tokens(usage), batch).total


def worst_case_cost(price: Price, prompt_tokens: int, completion_cap: int, batch: bool = False) -> float:
    """The most a request can cost: its prompt estimate, none of it cached, plus its whole completion cap
    (`max_tokens` × n; 0 for embeddings). This is what a spending cap reserves before the request is sent.

    The prompt is an estimate: a caller that has learned how far its estimates run below the real counts should
    pass a raised figure, since a cap can only be kept if the reservation is not below the real cost.
    """
    rates = price.rates(batch)
    return (max(0, prompt_tokens) * rates.input + max(0, completion_cap) * rates.output) / PER_TOKENS


@dataclass(slots=True)
class _ModelTally:
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0


class CostTally:
    """Cost by model for a run: tokens are summed per model and priced when asked, so the figures do not drift.

    A model the table has no price for is counted apart (requests and tokens) and never added to the total as
    free: the summary names it.
    """

    def __init__(self, table: PriceTable, batch: bool = False) -> None:
        self.table = table
        self.batch = batch
        self._known: dict[str, _ModelTally] = {}
        self._unknown: dict[str, _ModelTally] = {}
        self._prices: dict[str, Price | None] = {}

    def price_for(self, model: str) -> Price | None:
        """The price of `model` (looked up once per model)."""
        if model not in self._prices:
            self._prices[model] = self.table.price_for(model)
        return self._prices[model]

    def add(self, model: str, usage: dict[str, Any] | None) -> float | None:
        """Count one billed answer; returns its cost, or None when the model's price is unknown."""
        price = self.price_for(model)
        tokens = usage_tokens(usage)
        tally = (self._known if price is not None else self._unknown).setdefault(model, _ModelTally())
        tally.requests += 1
        tally.prompt_tokens += tokens.prompt
        tally.cached_tokens += tokens.cached
        tally.completion_tokens += tokens.completion
        return None if price is None else tokens_cost(price, tokens, self.batch).total

    def add_tokens(self, model: str, requests: int, prompt: int, cached: int, completion: int) -> None:
        """Count `requests` answers at once, by their summed tokens (a caller that sums on its hot path)."""
        price = self.price_for(model)
        tally = (self._known if price is not None else self._unknown).setdefault(model, _ModelTally())
        tally.requests += requests
        tally.prompt_tokens += prompt
        tally.cached_tokens += cached
        tally.completion_tokens += completion

    def parts(self, model: str) -> CostParts:
        """The cost of one model so far (zeros for a model not seen or not priced)."""
        tally, price = self._known.get(model), self.price_for(model)
        if tally is None or price is None:
            return CostParts(0.0, 0.0, 0.0)
        tokens = UsageTokens(tally.prompt_tokens, tally.cached_tokens, tally.completion_tokens)
        return tokens_cost(price, tokens, self.batch)

    @property
    def total_parts(self) -> CostParts:
        """The cost of every priced model so far, split."""
        parts = [self.parts(model) for model in self._known]
        return CostParts(math.fsum(p.prompt for p in parts), math.fsum(p.cached for p in parts),
                         math.fsum(p.completion for p in parts))

    @property
    def total(self) -> float:
        """USD spent on the models whose price is known."""
        return self.total_parts.total

    @property
    def unknown(self) -> dict[str, int]:
        """Models without a price, with the number of answers each had."""
        return {model: tally.requests for model, tally in sorted(self._unknown.items())}

    def to_dict(self) -> dict[str, Any]:
        """For `--summary-json`: the total and, per model, tokens and cost split prompt / cached / completion."""
        by_model: dict[str, Any] = {}
        for model, tally in sorted(self._known.items()):
            parts = self.parts(model)
            by_model[model] = {
                "requests": tally.requests,
                "prompt_tokens": tally.prompt_tokens,
                "cached_tokens": tally.cached_tokens,
                "completion_tokens": tally.completion_tokens,
                "prompt_usd": parts.prompt,
                "cached_usd": parts.cached,
                "completion_usd": parts.completion,
                "total_usd": parts.total,
            }
        unknown = {
            model: {"requests": t.requests, "prompt_tokens": t.prompt_tokens, "cached_tokens": t.cached_tokens,
                    "completion_tokens": t.completion_tokens}
            for model, t in sorted(self._unknown.items())
        }
        total = self.total_parts
        return {
            "currency": "USD",
            "batch_api": self.batch,
            "prices_as_of": self.table.as_of,
            "total_usd": total.total,
            "prompt_usd": total.prompt,
            "cached_usd": total.cached,
            "completion_usd": total.completion,
            "by_model": by_model,
            "unknown_price": unknown,
        }

    def render(self) -> str:
        """One line, or two when some model has no price:
        `cost  $1.23 (prompt $0.40, completion $0.83)` and `unknown price for: my-model (120 requests)`."""
        total = self.total_parts
        split = [f"prompt {usd(total.prompt)}"]
        if total.cached:
            split.append(f"cached {usd(total.cached)}")
        split.append(f"completion {usd(total.completion)}")
        tier = " at Batch API prices" if self.batch else ""
        line = f"cost  {usd(total.total)}{tier} ({', '.join(split)})"
        if self._unknown:
            named = ", ".join(f"{model} ({count:,} request{'s' if count != 1 else ''})"
                              for model, count in self.unknown.items())
            line += f"; unknown price for: {named}"
        return line


def usd(amount: float) -> str:
    """A dollar amount for people: cents from $1 up, three significant digits below ($0.00123)."""
    if amount <= 0:
        return "$0.00"
    decimals = max(2, min(8, 2 - math.floor(math.log10(amount))))
    return f"${amount:,.{decimals}f}"
