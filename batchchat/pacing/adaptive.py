"""Adaptive concurrency for servers that publish no limits: a resizable gate and an AIMD controller.

Like TCP congestion control: the number of requests in flight grows fast at first (slow
start, x1.5 a round trip), then by about 5% per round trip while answers come back as fast as usual, shrinks by a
tenth when latency climbs well above its long-run level (a queue is forming at the server), and halves on
an overload signal (429, 503, a timeout). A self-hosted server
(vLLM, Ollama, a LiteLLM proxy) is driven to the concurrency where it is busy but not queueing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable


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
    trouble; after that it grows by 5% (at least one) per round trip. Queueing is read two ways:
    - as a gradient, not against the best latency ever seen (LLM latencies vary tenfold with the answer's
      length): the median of the last answers against a long-run average spanning about ten round trips. Each
      kind of request (a model) is judged against its own average, so a change in the mix of models is not
      taken for a queue;
    - as the knee of throughput (Little's law: answers per second = requests in flight / latency, which
      answers arriving in bursts do not disturb): when the requests in flight have grown by a fifth since a
      reference round and the throughput has not grown with them (by less than a third of the growth, or
      than `KNEE_GAIN`), the server is queueing (a single worker, a saturated GPU): the limit goes back to
      the reference.
    That reference may itself be past the knee (slow start overshoots, and the first rounds may already be
    queueing), so the limit then steps down by a fifth at a time, each level judged two rounds after it is
    set (the first drains or fills the queue), while the throughput stays within `KNEE_GAIN` of the best
    level's; the first step that costs more goes back up, and the limit holds there for `HOLD_ROUNDS` rounds
    (re-measuring it) before probing upwards again.
    `clock` is the seam for tests.
    """

    HOLD_ROUNDS = 20
    KNEE_GAIN = 0.03  # more in flight is worth it only if it buys at least this much more throughput

    __slots__ = ("_above", "_answers", "_base", "_clock", "_estimate", "_gate", "_hold", "_last_cut", "_long",
                 "_max", "_overloads", "_probe_rounds", "_recent", "_ref", "_rising", "_round_flight", "_round_latency",
                 "_samples", "_slow_start", "_tolerance")

    def __init__(self, gate: ConcurrencyGate, max_limit: int, initial: int = 8, tolerance: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._gate = gate
        self._max = max_limit
        self._estimate = float(min(initial, max_limit))
        self._tolerance = tolerance
        self._clock = clock
        self._long = 0.0  # long-run average latency of all answers (the round trip)
        self._base: dict[object, list[float]] = {}  # kind -> [long-run average latency, answers]
        self._samples = 0
        self._recent: deque[float] = deque(maxlen=32)  # latencies over their kind's long-run average
        self._slow_start = True
        self._last_cut = -math.inf
        self._answers = 0  # answers and overload signals in the current round (about one round trip)
        self._overloads = 0
        self._round_latency = 0.0  # sums over the round's answers, for Little's law
        self._round_flight = 0.0
        self._ref: tuple[float, float] | None = None  # (in flight, throughput) of the reference round
        self._hold = 0
        self._probe_rounds = 0  # rounds until the current level is judged (a growth, a knee, a step down)
        self._rising = False  # the level being judged is a growth (else the reference or a step down)
        self._above: tuple[float, float, float, float] | None = None  # the level a step down came from
        gate.set_limit(int(self._estimate))

    @property
    def limit(self) -> int:
        """The concurrency the controller currently allows."""
        return self._gate.limit

    def on_success(self, latency: float, kind: object = None) -> None:
        """An answer came back after `latency` seconds (`kind`: what was asked, e.g. its model)."""
        self._samples += 1
        # a plain mean over the first answers, then an average that spans about ten round trips
        weight = 1.0 / self._samples if self._samples <= 32 else min(1.0, 0.1 / self._estimate)
        self._long += (latency - self._long) * weight
        base = self._base.setdefault(kind, [latency, 0.0])
        base[1] += 1
        ratio = latency / base[0] if base[0] > 0 else 1.0
        base[0] += (latency - base[0]) * (1.0 / base[1] if base[1] <= 32 else min(1.0, 0.1 / self._estimate))
        self._recent.append(ratio)
        self._round_latency += latency
        self._round_flight += max(1, self._gate.in_use)  # this one holds its slot until its result is written
        if self._count_round(overload=False):
            return
        recent = self._recent
        if self._samples > 16 and len(recent) >= 8:
            last = sorted(list(recent)[-16:])
            if last[len(last) // 2] > self._tolerance:
                self._cut(0.9)
                return
            # as TCP's HyStart: latency is rising, stop growing fast (judged on more answers: a false
            # exit costs speed for the rest of the run)
            if self._slow_start and len(recent) == recent.maxlen and sorted(recent)[16] > 1.5:
                self._slow_start = False
        if self._hold or self._probe_rounds:
            return
        # per round trip: x1.5 in slow start, then +5% (at least one), so a limit in the thousands is
        # reached in tens of round trips, not thousands; but at most one a round (20 answers), so that a
        # small limit is judged at each step (at 2 in flight a round trip is 2 answers)
        step = 0.5 if self._slow_start else max(1.0, 0.05 * self._estimate) / max(self._estimate, 20.0)
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

    def _count_round(self, overload: bool) -> bool:
        """Count an answer; at a round's end judge its throughput. True when that moved the limit."""
        moved = False
        if self._answers >= max(self._estimate, 20.0):
            moved = self._end_round()
            self._answers = self._overloads = 0
            self._round_latency = self._round_flight = 0.0
        self._answers += 1
        self._overloads += overload
        return moved

    def _end_round(self) -> bool:
        """Little's law over the round: did the throughput grow with the requests in flight?"""
        successes = self._answers - self._overloads
        if successes < 8 or self._round_latency <= 0.0:
            return False
        flight = self._round_flight / successes
        throughput = flight / (self._round_latency / successes)
        if self._probe_rounds:
            return self._judge_level(flight, throughput)
        if self._hold:
            self._hold -= 1
            if self._hold < self.HOLD_ROUNDS - 1:  # the held level, measured once the change has settled
                self._ref = (flight, throughput)
                return False
        ref = self._ref
        if ref is None or flight < ref[0] / 1.2 or throughput > ref[1] * (flight / ref[0]):
            self._ref = (flight, throughput)  # a first round, one after a cut, or one that scaled fully
            return False
        if flight < ref[0] * 1.2:
            return False
        if self._slow_start:  # judged at once: slow start would overshoot far while the level settles
            return self._judge_growth(flight, throughput)
        if throughput >= ref[1] * (1.0 + (flight / ref[0] - 1.0) / 2.0):
            self._ref = (flight, throughput)  # plainly scaling: no need to stop and check
            return False
        self._rising = True  # hold this level and judge it once settled (a growing queue flatters it)
        self._probe_rounds = 2
        return False

    def _judge_growth(self, flight: float, throughput: float) -> bool:
        """The requests in flight grew by a fifth over the reference: did the throughput grow with them?"""
        ref = self._ref
        if ref is None or self._worth(ref[0], ref[1], flight, throughput):
            self._ref = (flight, throughput)  # still scaling with the requests in flight
            return False
        # past the knee: more in flight bought (almost) nothing but queueing. Back to the reference, which is
        # measured afresh (it may come from a round of slow start) before stepping down from it.
        self._slow_start = False
        self._recent.clear()
        self._above = None
        self._move(max(1.0, min(self._estimate, ref[0])))
        return True

    def _worth(self, low_flight: float, low: float, high_flight: float, high: float) -> bool:
        """Whether `high_flight` in flight bought enough throughput over `low_flight` to be worth its queue."""
        gain = min((high_flight / low_flight - 1.0) / 3.0, self.KNEE_GAIN)
        return high >= low * (1.0 + gain)

    def _move(self, limit: float) -> None:
        """Go to `limit` and judge it two rounds later (the first drains or fills the queue)."""
        self._estimate = limit
        self._probe_rounds = 2
        self._gate.set_limit(int(limit))

    def _judge_level(self, flight: float, throughput: float) -> bool:
        """A level has settled: judge a growth, or step down by a fifth while the throughput holds (the
        first step that costs throughput goes back up)."""
        self._probe_rounds -= 1
        if self._probe_rounds:
            return False
        if self._rising:
            self._rising = False
            return self._judge_growth(flight, throughput)
        above = self._above  # (limit, flight, throughput, best throughput) of the level above; None: first
        if above is not None and self._worth(flight, throughput, above[1], max(above[2], above[3])):
            # the step cost throughput: the level above is the knee
            self._above = None
            self._estimate = above[0]
            self._ref = (above[1], above[2])
            self._hold = self.HOLD_ROUNDS
            self._gate.set_limit(int(above[0]))
            return True
        self._ref = (flight, throughput)
        lower = min(int(self._estimate) - 1, int(self._estimate * 0.8))
        if lower < 1:
            self._above = None
            self._hold = self.HOLD_ROUNDS
            return False
        self._above = (self._estimate, flight, throughput, max(throughput, above[3] if above else 0.0))
        self._move(float(lower))
        return True

    def _cut(self, factor: float) -> None:
        now = self._clock()
        # at most one cut per round trip: the answers already in flight reflect the old limit
        if now - self._last_cut < max(self._long, 0.01):
            return
        self._last_cut = now
        self._slow_start = False
        self._estimate = max(1.0, self._estimate * factor)
        self._recent.clear()
        self._answers = self._overloads = 0
        self._round_latency = self._round_flight = 0.0
        self._ref = None
        self._above = None
        self._probe_rounds = 0
        self._rising = False
        self._gate.set_limit(int(self._estimate))
