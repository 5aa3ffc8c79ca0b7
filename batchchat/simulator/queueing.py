"""A fixed number of workers and a FIFO queue in front of them (`SimulatorConfig.workers`).

A request that is admitted and answered normally needs a worker for its service time (the
configured latency); when all `workers` are busy it waits in arrival order. Its latency is then
queue wait + service time, as at a self-hosted model server with a fixed batch size. The pool
knows nothing of HTTP: an entry is a callable that starts the service, and whoever holds a
worker calls `release` once when done (or when its connection is lost).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from batchchat.simulator.stats import Stats

__all__ = ["WorkerPool"]


class WorkerPool:
    """`workers` slots and a FIFO of waiting starts; keeps `stats.serving` / `stats.queued` current."""

    __slots__ = ("free", "stats", "waiting", "workers")

    def __init__(self, workers: int, stats: Stats) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.free = workers
        self.stats = stats
        self.waiting: deque[Callable[[], None]] = deque()

    def enter(self, start: Callable[[], None]) -> None:
        """Call `start` now if a worker is free (it then holds one), else when one frees up, in FIFO order."""
        if self.free > 0:
            self._take()
            start()
            return
        self.waiting.append(start)
        stats = self.stats
        stats.queued += 1
        if stats.queued > stats.max_queued:
            stats.max_queued = stats.queued

    def cancel(self, start: Callable[[], None]) -> bool:
        """Forget a waiting entry (its client went away); False if it is not waiting."""
        try:
            self.waiting.remove(start)
        except ValueError:
            return False
        self.stats.queued -= 1
        return True

    def release(self) -> None:
        """A worker is done: hand it to the longest-waiting entry, or free it."""
        self.stats.serving -= 1
        self.free += 1
        if self.waiting:
            start = self.waiting.popleft()
            self.stats.queued -= 1
            self._take()
            start()

    def _take(self) -> None:
        self.free -= 1
        stats = self.stats
        stats.serving += 1
        if stats.serving > stats.max_serving:
            stats.max_serving = stats.serving
