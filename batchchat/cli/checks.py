"""What `batchchat validate` tells beyond bad lines: the completion cap it assumed for lines that set none,
and the requests too large for a tokens-per-minute budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from batchchat.config.settings import EMBEDDINGS, JobDefaults
from batchchat.input.parse import MAX_TOKENS_FIELDS, Job, read_jobs
from batchchat.pacing.tokens import DEFAULT_COMPLETION_CAP, completion_cap, prompt_estimate

SHOWN = 10  # oversized requests listed one by one


@dataclass(slots=True)
class Assumptions:
    """Lines charged the default completion cap, and requests over a `--tpm` budget."""

    uncapped: int = 0
    too_large: list[str] = field(default_factory=list)
    too_large_count: int = 0

    def describe(self, tpm: float | None) -> list[str]:
        """The notes for a person, one per line."""
        lines: list[str] = []
        if self.uncapped:
            lines.append(f"{self.uncapped:,} requests set no max_tokens: each is charged {DEFAULT_COMPLETION_CAP} "
                         "completion tokens up front in the estimate and against --tpm (give --max-tokens, or "
                         "max_tokens in the line, to change it)")
        if self.too_large_count:
            lines.append(f"{self.too_large_count:,} requests are larger than the whole --tpm budget of {tpm:,.0f}; "
                         "a run with it would refuse them (request_too_large):")
            lines += self.too_large
            if self.too_large_count > len(self.too_large):
                lines.append(f"(and {self.too_large_count - len(self.too_large):,} more)")
        return lines


def check_assumptions(path: Path, display: str, defaults: JobDefaults, tpm: float | None) -> Assumptions:
    """Read the valid requests of `path` again: which set no completion cap, which exceed `tpm`."""
    found = Assumptions()
    for item in read_jobs(path, defaults):
        if not isinstance(item, Job):
            continue
        if item.url != EMBEDDINGS and not any(f in item.body for f in MAX_TOKENS_FIELDS[item.url]):
            found.uncapped += 1
        if tpm:
            cost = prompt_estimate(item) + completion_cap(item)
            if cost > tpm:
                found.too_large_count += 1
                if len(found.too_large) < SHOWN:
                    found.too_large.append(f"{display}:{item.line_no}: estimated at {cost:,} tokens "
                                           "(prompt + max_tokens x n)")
    return found
