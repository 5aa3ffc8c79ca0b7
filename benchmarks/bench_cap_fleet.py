"""The spending cap shared by a fleet (#14): `bench_cap`'s seeded runs, the capped run made by three processes on
shards of the file, sharing one cap through a real redis-server (`--max-cost` with `--shared`).

Run alone: `python -m benchmarks.bench_cap --seeds 20 --fleet 3`; `run(quick, work)` for `benchmarks.run_all`.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_cap import run as run_cap
from benchmarks.common import Section

FLEET = 3


def run(quick: bool, work: Path) -> Section:
    """The cap benchmark with `FLEET` processes sharing the cap."""
    return run_cap(quick, work, fleet=FLEET)
