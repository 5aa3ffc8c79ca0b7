"""`batchchat report OUTPUT [--input INPUT]`: a per-id account of what came back.

Ids ok and failed (by error code), with the input: ids missing from the output and ids the output holds that the
input does not; ids with several lines and those answered more than once; lines with no error whose answer is a
4xx/5xx (as a Batch API output file holds them); tokens and cost by model and service tier. Exit code: 0 every id
(of the input, else of the output) succeeded; 1 some failed; 9 (`ExitCode.MISSING_IDS`) ids of the input have no
line at all, so cron can alert on it. Ids are counted as 64-bit hashes (a few MB for a million).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchchat.errors import ExitCode
from batchchat.money.cost import usd
from batchchat.results.flat import flatten
from batchchat.results.scan import iter_lines, scan_output

EXAMPLES = 5


@dataclass(slots=True)
class _ByModel:
    ok: int = 0
    cached: int = 0
    prompt: int = 0
    completion: int = 0
    cached_tokens: int = 0
    cost: float = 0.0
    cost_unknown: int = 0


@dataclass(slots=True)
class Reconciliation:
    """The account of one output (and its input)."""

    output: str
    input: str | None = None
    input_ids: int | None = None
    lines: int = 0
    ids: int = 0
    ok: int = 0
    cached: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    missing: int = 0
    missing_examples: list[str] = field(default_factory=list)
    unexpected: int = 0
    unexpected_examples: list[str] = field(default_factory=list)
    repeated: int = 0
    repeated_examples: list[str] = field(default_factory=list)
    answered_twice: int = 0
    error_in_200: int = 0  # lines with error null but a non-2xx answer
    by_model: dict[tuple[str, str], _ByModel] = field(default_factory=dict)
    costs: array = field(default_factory=lambda: array("d"))
    latencies: array = field(default_factory=lambda: array("d"))

    @property
    def exit_code(self) -> int:
        """9 ids missing, 1 some failed, else 0."""
        if self.missing:
            return int(ExitCode.MISSING_IDS)
        return int(ExitCode.FAILURES) if sum(self.failed.values()) else int(ExitCode.OK)

    def to_dict(self) -> dict[str, Any]:
        """The account as JSON-ready data (`--json`)."""
        return {"output": self.output, "input": self.input, "input_ids": self.input_ids, "lines": self.lines,
                "ids": self.ids, "ok": self.ok, "cached": self.cached, "failed": dict(self.failed.most_common()),
                "missing": self.missing, "missing_examples": self.missing_examples, "unexpected": self.unexpected,
                "unexpected_examples": self.unexpected_examples, "repeated_ids": self.repeated,
                "answered_twice": self.answered_twice, "error_in_200": self.error_in_200,
                "by_model": [{"model": m, "service_tier": t, "ok": b.ok, "cached": b.cached,
                              "prompt_tokens": b.prompt, "completion_tokens": b.completion,
                              "cached_tokens": b.cached_tokens, "cost_usd": round(b.cost, 8),
                              "cost_unknown": b.cost_unknown} for (m, t), b in self.by_model.items()],
                "exit_code": self.exit_code}

    def render(self) -> str:
        """The account for a person."""
        def some(examples: list[str], count: int) -> str:
            more = ", ..." if count > len(examples) else ""
            return f" ({', '.join(examples)}{more})" if examples else ""

        failed = sum(self.failed.values())
        head = f"batchchat report: {self.output}" + (f" against {self.input}" if self.input else "")
        lines = [head]
        if self.input_ids is not None:
            lines.append(f"  input      {self.input_ids:,} ids")
        lines.append(f"  output     {self.lines:,} lines, {self.ids:,} ids: {self.ok:,} ok"
                     + (f" ({self.cached:,} from the cache)" if self.cached else "") + f", {failed:,} failed")
        if failed:
            lines.append("  failed     " + ", ".join(f"{code} {n:,}" for code, n in self.failed.most_common()))
        if self.input_ids is not None:
            lines.append(f"  missing    {self.missing:,} ids of the input have no line"
                         + some(self.missing_examples, self.missing))
            lines.append(f"  unexpected {self.unexpected:,} ids not in the input"
                         + some(self.unexpected_examples, self.unexpected))
        lines.append(f"  repeated   {self.repeated:,} ids with several lines"
                     + some(self.repeated_examples, self.repeated)
                     + f"; {self.answered_twice:,} answered successfully more than once")
        lines.append(f"  4xx in 200 {self.error_in_200:,} lines with no error but a 4xx/5xx answer (counted failed)")
        if self.by_model:
            lines.append(f"  {'model':<24} {'tier':<10} {'ok':>9} {'prompt tok':>12} {'compl tok':>12} "
                         f"{'cached tok':>11} {'cost':>11}")
            for (model, tier), b in sorted(self.by_model.items()):
                cost = usd(b.cost) + (f" + {b.cost_unknown:,} unpriced" if b.cost_unknown else "")
                lines.append(f"  {model:<24} {tier:<10} {b.ok:>9,} {b.prompt:>12,} {b.completion:>12,} "
                             f"{b.cached_tokens:>11,} {cost:>11}")
        lines.append(f"  exit code  {self.exit_code}")
        return "\n".join(lines)


def reconcile(output: Path, input_ids: Iterable[str] | None = None, input_name: str | None = None) -> Reconciliation:
    """Account for every id of `output`; with `input_ids` (every id of the input, in order), what is missing."""
    found = scan_output(output, columns=False)
    result = Reconciliation(str(output), input_name, lines=found.lines, repeated=len(found.repeated_ids),
                            repeated_examples=list(found.repeated_ids)[:EXAMPLES],
                            answered_twice=found.answered_twice)
    expected: set[int] | None = None
    if input_ids is not None:
        expected = set()
        count = 0
        for custom_id in input_ids:
            expected.add(hash(custom_id))
            count += 1
        result.input_ids = count
    seen: set[int] = set()
    for index, line in iter_lines(output):
        flat, _embedding, _metadata, _parsed = flatten(line)
        custom_id = str(flat["custom_id"])
        key = hash(custom_id)
        if line.get("error") is None and flat["status"] != "ok":
            result.error_in_200 += 1
        if index in found.losers:
            continue
        seen.add(key)
        if expected is not None and key not in expected:
            result.unexpected += 1
            if len(result.unexpected_examples) < EXAMPLES:
                result.unexpected_examples.append(custom_id)
        _count(result, flat)
    result.ids = len(seen)
    if input_ids is not None and expected is not None:
        result.missing = len(expected - seen)
        if result.missing and isinstance(input_ids, _Replayable):
            result.missing_examples = [i for i in input_ids.again() if hash(i) not in seen][:EXAMPLES]
    return result


def _count(result: Reconciliation, flat: dict[str, Any]) -> None:
    if flat["status"] != "ok":
        result.failed[flat["error_code"] or "error"] += 1
        return
    result.ok += 1
    bucket = result.by_model.setdefault((flat["model"] or "-", flat["service_tier"] or "-"), _ByModel())
    bucket.ok += 1
    if flat["cached"]:
        result.cached += 1
        bucket.cached += 1
        return  # not paid this time: its tokens and cost were counted when it was answered
    bucket.prompt += flat["prompt_tokens"] or 0
    bucket.completion += flat["completion_tokens"] or 0
    bucket.cached_tokens += flat["cached_tokens"] or 0
    if flat["cost_usd"] is None:
        bucket.cost_unknown += 1
    else:
        bucket.cost += flat["cost_usd"]
        result.costs.append(flat["cost_usd"])
    if flat["latency_ms"] is not None:
        result.latencies.append(flat["latency_ms"])


class _Replayable:
    """Input ids that can be read a second time (to name the missing ones)."""

    def __init__(self, make: Any) -> None:
        self._make = make

    def __iter__(self) -> Any:
        return iter(self._make())

    def again(self) -> Any:
        return iter(self._make())


def replayable(make: Any) -> _Replayable:
    """Wrap a function that yields the input's ids, so that `reconcile` can read them twice."""
    return _Replayable(make)
