"""Attempts in flight: a timeout per attempt that follows the latency the server shows, and which requests wait.

Every attempt goes out through the watch (`AttemptWatch.attempt` gives a one-use `Sender`), which holds it in a
dict in the order sent while it is out: two dict operations a request, nothing else on the hot path. Once a
second `sweep` takes the attempt timeout from the run's latency histogram (successes, as written) and gives up
the attempts that have waited longer, oldest first, stopping at the first one still within it:

- the timeout is `ATTEMPT_MULTIPLE` x the p99 of the run's answers, at least `ATTEMPT_FLOOR` s; before
  `MIN_ANSWERS` answers (a slow start) there is none, and at `--timeout` or more it is left to `--timeout`;
- an attempt given up ends as a `Retryable` timeout, so the request is retried as any timeout is; each time one
  request's attempt is given up, its next attempt may wait twice as long (a request that is slow by nature,
  such as a long answer among short ones, still gets through);
- requests given up and then answered enter the histogram with their whole latency, so when more than 1% of
  attempts are given up the p99, and the timeout with it, rises (a server that slowed down is not cut forever).

`describe_waiting` names the requests that have waited longest, for the progress line and the log, once they
have waited past `stall_mark` (2 x the p99, at least `STALL_FLOOR` s; `STALL_UNKNOWN` s before `MIN_ANSWERS`).
`clock` and `sleep` are the seams tests replace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from batchchat.http.outcomes import Outcome, Retryable
from batchchat.http.sender import Sender
from batchchat.report.counters import LatencyHistogram

ATTEMPT_MULTIPLE = 4.0  # the attempt timeout, in p99s of the run's answers
ATTEMPT_FLOOR = 10.0  # seconds: never less (network hiccups, TCP retransmissions, a pause in the server)
MIN_ANSWERS = 20  # answers before the p99 is trusted: until then only --timeout applies
STALL_FLOOR = 5.0  # seconds an attempt waits before the progress line names it ...
STALL_UNKNOWN = 60.0  # ... or this, before MIN_ANSWERS answers
SWEEP_PERIOD = 1.0  # seconds between sweeps
NAMED = 3  # requests named in a message (the rest counted)


def attempt_timeout(latencies: LatencyHistogram, ceiling: float) -> float | None:
    """The attempt timeout a run's answers support: None before `MIN_ANSWERS` answers or when it would be
    `ceiling` (--timeout) or more; else `ATTEMPT_MULTIPLE` x their p99, at least `ATTEMPT_FLOOR`."""
    if latencies.count < MIN_ANSWERS:
        return None
    limit = max(ATTEMPT_FLOOR, ATTEMPT_MULTIPLE * latencies.percentile(0.99))
    return limit if limit < ceiling else None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _named(ids: list[str], total: int) -> str:
    more = f" +{total - len(ids)} more" if total > len(ids) else ""
    return ", ".join(ids) + more


class Attempt:
    """One attempt, as the `Sender` it is sent through: out of the watch's dict once it ends, given up by a sweep
    (`cut`) when it waits too long."""

    __slots__ = ("_task", "_watch", "custom_id", "cut", "limit", "scale", "sent_at")

    def __init__(self, watch: AttemptWatch, custom_id: str, scale: float) -> None:
        self._watch = watch
        self.custom_id = custom_id
        self.scale = scale  # 2 ** (this request's attempts given up so far)
        self.sent_at = 0.0
        self.cut = False
        self.limit = 0.0
        self._task: asyncio.Task[Any] | None = None

    async def send(self, path: str, content: bytes) -> Outcome:
        """Send through the watch's sender, in the watch's dict while out; a cut attempt ends as a timeout."""
        watch = self._watch
        paths = watch.paths
        if path not in paths:
            paths[path] = None
        waiting = watch.waiting
        self._task = asyncio.current_task()
        self.sent_at = watch.clock()
        waiting[self] = None
        try:
            return await watch.sender.send(path, content)
        except asyncio.CancelledError:
            # given up by a sweep (which cancelled this task while it waited here), and cancelled by nobody
            # else (a run that stops cancels too: then the cancellation goes on)
            if self.cut and self._task.uncancel() == 0:  # type: ignore[union-attr]
                return Retryable("timeout", f"timeout: no answer within {self.limit:.0f} s (the attempt timeout)")
            raise
        finally:
            del waiting[self]

    async def aclose(self) -> None:
        """Nothing to close (the watch's sender is closed by its owner)."""

    def give_up(self, limit: float) -> None:
        """End this attempt (waiting in `send`, as every attempt in the watch's dict is) as a timeout of `limit`."""
        if not self.cut and self._task is not None:
            self.cut = True
            self.limit = limit
            self._task.cancel()


class AttemptWatch:
    """The attempts of one run in flight, the attempt timeout, and who is waiting (see the module docstring)."""

    def __init__(self, sender: Sender | None, latencies: LatencyHistogram, ceiling: float,
                 echo: Callable[[str], None] = lambda text: None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = anyio.sleep) -> None:
        self.sender: Sender = sender  # type: ignore[assignment]  # set before the first attempt
        self._latencies = latencies
        self._ceiling = ceiling  # --timeout: the client's own read timeout, left to do its work
        self._echo = echo
        self.clock = clock
        self._sleep = sleep
        self.waiting: dict[Attempt, None] = {}  # the attempts out, in the order sent
        self.paths: dict[str, None] = {}  # the endpoint paths sent to, in the order first used
        self.given_up = 0

    def attempt(self, custom_id: str, cuts: int = 0) -> Attempt:
        """A `Sender` for one attempt of request `custom_id`, whose attempts were given up `cuts` times so far."""
        return Attempt(self, custom_id, 2.0 ** cuts if cuts else 1.0)

    def timeout(self) -> float | None:
        """The attempt timeout now (None: none yet, only --timeout)."""
        return attempt_timeout(self._latencies, self._ceiling)

    def sweep(self) -> list[Attempt]:
        """Give up the attempts that have waited past the attempt timeout (times their scale); returns them."""
        limit = self.timeout()
        if limit is None or not self.waiting:
            return []
        now = self.clock()
        cut: list[Attempt] = []
        for attempt in self.waiting:  # oldest first: the first within the timeout ends the sweep
            waited = now - attempt.sent_at
            if waited <= limit:
                break
            own = limit * attempt.scale
            if waited > own and not attempt.cut and own < self._ceiling:
                cut.append(attempt)
        for attempt in cut:
            attempt.give_up(limit * attempt.scale)
        if cut:
            self.given_up += len(cut)
            ids = [a.custom_id for a in cut[:NAMED]]
            p99 = self._latencies.percentile(0.99)
            self._echo(f"batchchat: {len(cut):,} attempts got no answer within the attempt timeout ({limit:.0f} s: "
                       f"{ATTEMPT_MULTIPLE:g}x the p99 of this run's answers, {p99:.2f} s, at least "
                       f"{ATTEMPT_FLOOR:g} s): {_named(ids, len(cut))}; retrying them")
        return cut

    def stall_mark(self) -> float:
        """Seconds an attempt waits before `describe_waiting` names it."""
        if self._latencies.count < MIN_ANSWERS:
            return STALL_UNKNOWN
        return max(STALL_FLOOR, 2.0 * self._latencies.percentile(0.99))

    def longest_waiting(self, mark: float | None = None) -> tuple[list[tuple[str, float]], int]:
        """The requests (id, seconds waited) that have waited past `mark` (`stall_mark()`), longest first (at
        most `NAMED`), and how many have."""
        if not self.waiting:
            return [], 0
        mark = self.stall_mark() if mark is None else mark
        now = self.clock()
        named: list[tuple[str, float]] = []
        count = 0
        for attempt in self.waiting:
            waited = now - attempt.sent_at
            if waited <= mark:
                break
            count += 1
            if len(named) < NAMED:
                named.append((attempt.custom_id, waited))
        return named, count

    def describe_waiting(self) -> str | None:
        """"8 waiting > 20s: r12 8m01s, r77 7m58s, r80 7m58s +5 more", or None when nobody waits that long."""
        named, count = self.longest_waiting()
        if not count:
            return None
        ids = [f"{custom_id} {_duration(waited)}" for custom_id, waited in named]
        return f"{count:,} waiting > {_duration(self.stall_mark())}: {_named(ids, count)}"

    async def run(self, period: float = SWEEP_PERIOD) -> None:
        """Sweep every `period` seconds until cancelled."""
        while True:
            await self._sleep(period)
            self.sweep()
