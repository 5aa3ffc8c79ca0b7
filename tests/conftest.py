"""Shared fixtures: the real simulator on a free loopback port, and job files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from batchchat.simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator() -> Iterator[Callable[..., Simulator]]:
    """A factory: `simulator(rpm=..., fault_rates=...)` starts one in a thread; all are stopped after the test."""
    with ExitStack() as stack:

        def start(**config: Any) -> Simulator:
            return stack.enter_context(Simulator.in_thread(SimulatorConfig(**config)))

        yield start


@pytest.fixture
def sim(simulator: Callable[..., Simulator]) -> Simulator:
    """A plain simulator: no limits, no latency, no faults."""
    return simulator()


