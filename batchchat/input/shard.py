"""`--shard K/N`: one job split over N processes or hosts; shard K runs the lines whose position modulo N is K.

A line's position is its line number in the file counted from 0 (blank lines count too), so every shard sees
the same numbering whatever it has done, and a line without a custom_id keeps the id derived from its line
number. The pre-scan (`input/plan.scan`) marks the lines of other shards out of the plan: they are neither
read again by dispatch nor counted as done or to run. Each shard writes its own output (the default name gains
`.shardK-of-N`) and resumes on its own; `batchchat merge` joins the outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from batchchat.errors import UsageError

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"--shard must be K/N with N >= 1 and 0 <= K < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """`"1/4"` -> `Shard(1, 4)`; anything else raises `UsageError`."""
        match = _SPEC.fullmatch(spec)
        if match is None:
            raise UsageError(f"--shard must look like K/N (for example 0/4: the first of four shards), got {spec!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def owns(self, line_no: int) -> bool:
        """Whether the line numbered `line_no` (1-based, as in messages) belongs to this shard."""
        return (line_no - 1) % self.count == self.index

    @property
    def suffix(self) -> str:
        """What the default output name gains: `.shardK-of-N`."""
        return f".shard{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
