"""Helpers of the `--via batch` tests: a simulator with a fast Batch API, run options, the checks every
test makes (every id once, nothing bought twice)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import TEST_KEY, read_output

from batchchat.simulator import Simulator
from batchchat.simulator.batch_config import BatchConfig

FAST = {"window_seconds": 120.0, "validate_seconds": 0.05, "lines_per_second": 20_000.0,
        "finalize_seconds": 0.05, "cancel_seconds": 0.05}


def start_batch_sim(simulator: Callable[..., Simulator], **batch: Any) -> Simulator:
    """A simulator whose Batch API runs a batch in a fraction of a second (knobs override)."""
    return simulator(api_key=TEST_KEY, batch=BatchConfig(**{**FAST, **batch}))


def batch_options(sim: Simulator, **extra: Any) -> dict[str, Any]:
    """`batchchat.run` options for a Batch API run against `sim`, polling fast."""
    options = {"base_url": sim.base_url, "api_key": TEST_KEY, "progress": "off", "via": "batch",
               "poll_interval": 0.05, "backoff_base": 0.01, "backoff_max": 0.05, "max_wait": 0.5}
    options.update(extra)
    return options


def batch_stats(sim: Simulator) -> dict[str, Any]:
    """The simulator's Batch API counters."""
    return sim.stats()["batch"]


def assert_nothing_bought_twice(sim: Simulator) -> dict[str, Any]:
    """No file uploaded twice under one name, no input file with two batches; returns the stats."""
    stats = batch_stats(sim)
    twice = [name for name, n in stats["uploads_by_filename"] if n > 1]
    assert not twice, f"uploaded twice: {twice}"
    twice = [name for name, n in stats["batches_by_input_file"] if n > 1]
    assert not twice, f"batches created twice for: {twice}"
    twice = [name for name, n in stats["batches_by_filename"] if n > 1]
    assert not twice, f"batches created twice for: {twice}"
    return stats


def assert_each_id_once(output: Path, ids: list[str]) -> list[dict[str, Any]]:
    """The output holds exactly one line per id of `ids`; returns the lines."""
    lines = read_output(output)
    counts = Counter(line["custom_id"] for line in lines)
    assert set(counts) == set(ids), (set(ids) - set(counts), set(counts) - set(ids))
    assert max(counts.values()) == 1, [i for i, n in counts.items() if n > 1][:5]
    return lines
