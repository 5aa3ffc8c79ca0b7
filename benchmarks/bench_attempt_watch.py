"""What the stops cost a request: an attempt sent through the `AttemptWatch` (held in its dict while out, so a
hung one can be given up) against the bare sender, and `EndpointHealth.observe` once every group is judged.

    python -m benchmarks.bench_attempt_watch    # µs per attempt, best of 5 rounds of 100,000

Not part of `run_all` (it needs no simulator and takes a few seconds).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from batchchat.http.outcomes import Outcome, Success
from batchchat.online.attempt_watch import AttemptWatch
from batchchat.online.health import EndpointHealth
from batchchat.report.counters import LatencyHistogram

N, ROUNDS = 100_000, 5
PATH = "/v1/chat/completions"
OK = Success(200, {}, b"{}", None, {})


class _Bare:
    """A sender that answers at once: what is left is the cost of the layers around it."""

    async def send(self, path: str, content: bytes) -> Outcome:
        return OK

    async def aclose(self) -> None:
        pass


async def _time(step: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(N):
            await step()
        best = min(best, time.perf_counter() - start)
    return best / N * 1e6


async def _observe_only() -> None:
    return None


async def _measure() -> tuple[float, float, float]:
    bare = _Bare()
    watch = AttemptWatch(bare, LatencyHistogram(), 600.0)
    health = EndpointHealth(32, lambda message: None, planned={(PATH, "m")})
    health.observe(OK, PATH, "m")  # judged alive: from now on the run skips it (`watching` is False)

    async def watched() -> Outcome:
        return await watch.attempt("r1").send(PATH, b"{}")

    async def observed() -> None:
        if health.watching:
            health.observe(OK, PATH, "m")

    return (await _time(lambda: bare.send(PATH, b"{}")), await _time(watched),
            await _time(observed) - await _time(_observe_only))


def main() -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    bare, watched, observed = asyncio.run(_measure())
    print(f"bare sender      {bare:6.2f} µs an attempt")
    print(f"through the watch {watched:5.2f} µs an attempt (+{watched - bare:.2f})")
    print(f"health, judged   {max(0.0, observed):6.2f} µs an attempt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
