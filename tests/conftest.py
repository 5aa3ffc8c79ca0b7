"""Shared fixtures: the real simulator on a free loopback port, and job files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from redis_server import RedisServer

from batchchat.simulator import Simulator, SimulatorConfig

# Property-based tests: a modest search in `make test`, a harder one in `make test-slow` (HYPOTHESIS_PROFILE=slow).
# No deadline: examples that run the simulator over loopback take as long as the machine makes them.
settings.register_profile("default", max_examples=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("slow", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for the whole session (`restart()` keeps the port)."""
    try:
        server = RedisServer()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied and running, as `redis://127.0.0.1:PORT/0`."""
    redis_server.start()
    redis_server.flush()
    return redis_server.url
