"""What one admission costs: the old limiter's core (two aiolimiter buckets, requests and tokens) against a model's
`Budget` on the in-process `LocalStore` (bucket.py arithmetic), with limits that never make anyone wait.

    python -m benchmarks.bench_acquire          # µs per admission, best of 5 rounds of 100,000

Not part of `run_all` (it needs no simulator and takes a few seconds); its figures are in RESULTS.md.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

RPM, TPM = 100_000_000.0, 100_000_000_000.0  # unreachable: the bucket never waits
N, ROUNDS = 100_000, 5


async def _time(acquire: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(N):
            await acquire()
        best = min(best, time.perf_counter() - start)
    return best / N * 1e6


async def _old() -> float | None:
    try:
        from aiolimiter import AsyncLimiter
    except ImportError:
        return None
    requests, tokens = AsyncLimiter(RPM / 60 * 0.5, 0.5), AsyncLimiter(TPM / 60 * 0.5, 0.5)

    async def acquire() -> None:
        await requests.acquire(1)
        await tokens.acquire(300)

    return await _time(acquire)


async def _new() -> float:
    from batchchat.pacing.budget import Budget
    from batchchat.pacing.store import LocalStore

    budget = Budget(LocalStore(), "k", "gpt-4o-mini", rpm=RPM, tpm=TPM)
    return await _time(lambda: budget.acquire(300))


def main() -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    old = asyncio.run(_old())
    new = asyncio.run(_new())
    print(f"old: aiolimiter, requests + tokens buckets: {'n/a' if old is None else f'{old:.2f} µs'} per admission")
    print(f"new: Budget on LocalStore (bucket.py):      {new:.2f} µs per admission")
    return 0


if __name__ == "__main__":
    sys.exit(main())
