"""Adaptive concurrency for servers that publish no limits: a resizable gate and an AIMD controller.

Like TCP congestion control: the number of requests in flight grows by about one per round trip while
answers come back fast, shrinks by a tenth when latency climbs well above the best seen (a queue is
forming at the server), and halves on an overload signal (429, 503, a timeout). A self-hosted server
(vLLM, Ollama, a LiteLLM proxy) is driven to the concurrency where it is busy but not queueing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class ConcurrencyGate:
    """A semaphore whose limit can change while tasks wait on it."""

    __slots__ = ("_waiters", "in_use", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        """Wait for a free slot and take it."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # woken and cancelled at once: hand the slot on
            raise

    def release(self) -> None:
        """Give a slot back."""
        self.in_use -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        """Change the limit; tasks already holding slots keep them."""
        self.limit = max(1, limit)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            future = self._waiters.popleft()
            if not future.done():
                self.in_use += 1
                future.set_result(None)


class AimdController:
    """Sets a `ConcurrencyGate`'s limit from what each attempt's outcome and latency say about the server."""

    __slots__ = ("_estimate", "_gate", "_last_cut", "_max", "_min_latency", "_recent", "_tolerance")

    def __init__(self, gate: ConcurrencyGate, max_limit: int, initial: int = 8, tolerance: float = 1.5) -> None:
        self._gate = gate
        self._max = max_limit
        self._estimate = float(min(initial, max_limit))
        self._tolerance = tolerance
        self._min_latency = float("inf")
        self._recent: deque[float] = deque(maxlen=16)
        self._last_cut = 0.0
        gate.set_limit(int(self._estimate))

    @property
    def limit(self) -> int:
        """The concurrency the controller currently allows."""
        return self._gate.limit

    def on_success(self, latency: float) -> None:
        """An answer came back after `latency` seconds."""
        self._min_latency = min(self._min_latency, latency)
        self._recent.append(latency)
        typical = sorted(self._recent)[len(self._recent) // 2]
        if len(self._recent) >= 4 and typical > self._tolerance * self._min_latency + 0.002:
            self._cut(0.9)
        else:
            self._estimate = min(float(self._max), self._estimate + 1.0 / self._estimate)
            self._gate.set_limit(int(self._estimate))

    def on_overload(self) -> None:
        """The server said it is overloaded (429, 503) or an attempt timed out."""
        self._cut(0.5)

    def _cut(self, factor: float) -> None:
        now = time.monotonic()
        # at most one cut per round trip: the answers already in flight reflect the old limit
        if now - self._last_cut < max(self._min_latency, 0.01):
            return
        self._last_cut = now
        self._estimate = max(1.0, self._estimate * factor)
        self._recent.clear()
        self._gate.set_limit(int(self._estimate))
