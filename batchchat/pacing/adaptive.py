"""Adaptive concurrency for servers that publish no limits: a resizable gate and an AIMD controller.

Like TCP congestion control: the number of requests in flight grows fast at first (slow
start, x1.5 a round trip), then by about 5% per round trip while answers come back as fast as usual, shrinks by a
tenth when latency climbs well above its long-run level (a queue is forming at the server), and halves on
an overload signal (429, 503, a timeout). A self-hosted server
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
    """Sets a `ConcurrencyGate`'s limit from what each attempt's outcome and latency say about the server.

    Slow start grows the limit by half every round trip until latency starts rising or the first sign of
    trouble; after that it grows by 5% (at least one) per round trip. Queueing is read as a gradient, not
    against the best latency ever seen (LLM latencies vary tenfold with the answer's length): the median of
    the last answers against a long-run average spanning about ten round trips.
    """

    __slots__ = ("_answers", "_estimate", "_gate", "_last_cut", "_long", "_max", "_overloads", "_recent",
                 "_samples", "_slow_start", "_tolerance")

    def __init__(self, gate: ConcurrencyGate, max_limit: int, initial: int = 8, tolerance: float = 2.0) -> None:
        self._gate = gate
        self._max = max_limit
        self._estimate = float(min(initial, max_limit))
        self._tolerance = tolerance
        self._long = 0.0
        self._samples = 0
        self._recent: deque[float] = deque(maxlen=32)
        self._slow_start = True
        self._last_cut = 0.0
        self._answers = 0  # answers and overload signals in the current round (about one round trip)
        self._overloads = 0
        gate.set_limit(int(self._estimate))

    @property
    def limit(self) -> int:
        """The concurrency the controller currently allows."""
        return self._gate.limit

    def on_success(self, latency: float) -> None:
        """An answer came back after `latency` seconds."""
        self._count_round(overload=False)
        self._samples += 1
        # a plain mean over the first answers, then an average that spans about ten round trips
        weight = 1.0 / self._samples if self._samples <= 32 else min(1.0, 0.1 / self._estimate)
        self._long += (latency - self._long) * weight
        self._recent.append(latency)
        recent = self._recent
        if self._samples > 16 and len(recent) >= 8:
            last = sorted(list(recent)[-16:])
            if last[len(last) // 2] / self._long > self._tolerance:
                self._cut(0.9)
                return
            # as TCP's HyStart: latency is rising, stop growing fast (judged on more answers: a false
            # exit costs speed for the rest of the run)
            if self._slow_start and len(recent) == recent.maxlen and sorted(recent)[16] / self._long > 1.5:
                self._slow_start = False
        # per round trip: x1.5 in slow start, then +5% (at least one), so a limit in the thousands is
        # reached in tens of round trips, not thousands
        step = 0.5 if self._slow_start else max(1.0, 0.05 * self._estimate) / self._estimate
        self._estimate = min(float(self._max), self._estimate + step)
        self._gate.set_limit(int(self._estimate))

    def on_overload(self) -> None:
        """The server said it is overloaded (429, 503) or an attempt timed out.

        A few such answers are noise (a flaky upstream, one slow request); the limit halves only when they
        are more than a tenth of the round's answers.
        """
        self._count_round(overload=True)
        if self._overloads >= 2 and self._overloads > 0.1 * self._answers:
            self._cut(0.5)

    def _count_round(self, overload: bool) -> None:
        if self._answers >= max(self._estimate, 20.0):
            self._answers = self._overloads = 0
        self._answers += 1
        self._overloads += overload

    def _cut(self, factor: float) -> None:
        now = time.monotonic()
        # at most one cut per round trip: the answers already in flight reflect the old limit
        if now - self._last_cut < max(self._long, 0.01):
            return
        self._last_cut = now
        self._slow_start = False
        self._estimate = max(1.0, self._estimate * factor)
        self._recent.clear()
        self._answers = self._overloads = 0
        self._gate.set_limit(int(self._estimate))
