"""The latency histogram behind the summary's percentiles."""

from __future__ import annotations

import random

import pytest

from batchchat.report.counters import LatencyHistogram


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_are_within_a_quarter_percent_of_the_exact_ones(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(-1.0, 1.5) for _ in range(rng.randint(1, 20_000))]
    histogram = LatencyHistogram()
    for value in values:
        histogram.add(value)
    assert histogram.count == len(values)
    for q in (0.0, 0.5, 0.95, 0.99, 1.0):
        true = exact(values, q)
        if true > LatencyHistogram.LOWEST:
            assert histogram.percentile(q) == pytest.approx(true, rel=0.0026), q


def test_edges() -> None:
    histogram = LatencyHistogram()
    assert histogram.percentile(0.5) == 0.0  # nothing yet
    histogram.add(0.0)
    histogram.add(1e-9)
    assert histogram.percentile(1.0) == LatencyHistogram.LOWEST  # faster than the first bucket
    histogram.add(1e9)  # slower than the last bucket: counted there
    top = LatencyHistogram.LOWEST * LatencyHistogram.RATIO ** LatencyHistogram.BUCKETS
    assert histogram.percentile(1.0) == pytest.approx(top, rel=0.003)
    assert histogram.percentile(0.5) == LatencyHistogram.LOWEST
