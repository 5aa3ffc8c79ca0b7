"""How long a budget waits around a 429: the pause a refusal earns, and the guard a wait for room is slept.

A 429 that names a wait is waited that long. One that names none pauses 50 ms (an isolated one, a hair early,
costs little), then 0.8, 12.8 and 60 s while they keep coming (each sent after the last pause ended), so a
line's attempts outlast a calendar minute; an answer ends the run of them.

A wait for room is slept a little longer, the guard (5 ms, at most `GUARD_SHARE` of the request's turn at the
limits): requests reach the server after varying times on the wire, and one that needs the server's bucket
empty (at small limits one request is a large share of a second) must not arrive a millisecond early because
it travelled faster than the one before. A 429 that names a wait under `NEAR_MISS` (it came just too early)
doubles the guard, up to `GUARD_MAX`; `GUARD_RELAX` answers in a row halve it again. Its cost is bounded:
nothing while requests queue for a bucket that is never empty, at most 1% of a turn where each waits for it.
"""

from __future__ import annotations

from batchchat.pacing.bucket import Limits

DEFAULT_429_COOLDOWN = 0.05  # seconds, the first 429 in a row that names no wait
QUIET_429_GROWTH = 16.0
GUARD_MIN, GUARD_MAX, GUARD_SHARE = 0.005, 0.05, 0.01
NEAR_MISS = 0.05
GUARD_RELAX = 50  # answers in a row with no near miss before the guard halves


class Timing:
    """One budget's run of quiet 429s and its guard."""

    __slots__ = ("_guard", "_quiet", "_since_miss")

    def __init__(self) -> None:
        self._quiet = 0
        self._guard = GUARD_MIN
        self._since_miss = 0

    @property
    def guard(self) -> float:
        """The guard now, in seconds (before `GUARD_SHARE` bounds it for a request)."""
        return self._guard

    def guard_for(self, limits: Limits, tokens: float) -> float:
        """The guard added to a wait for room of a request of `tokens`: at most `GUARD_SHARE` of its turn."""
        turn = 0.0
        if limits.rpm is not None:
            turn = 60.0 / limits.rpm
        if limits.tpm is not None:
            turn = max(turn, tokens * 60.0 / limits.tpm)
        return min(self._guard, GUARD_SHARE * turn)

    def refused(self, retry_after: float | None, cooldown_left: float) -> float:
        """The pause a 429 earns: the wait it names, or the next of a run of quiet ones (`cooldown_left`: what
        is left of the last pause; none left: this one is the next in a row)."""
        if retry_after is not None:
            if retry_after < NEAR_MISS:  # just too early: arrivals vary more than the guard allows for
                self._guard = min(GUARD_MAX, 2.0 * self._guard)
                self._since_miss = 0
            return retry_after
        if cooldown_left <= 0.0:
            self._quiet += 1
        return DEFAULT_429_COOLDOWN * QUIET_429_GROWTH ** max(0, self._quiet - 1)

    def answered(self) -> None:
        """A success: quiet 429s are no longer in a row; the guard relaxes after enough of them."""
        self._quiet = 0
        self._since_miss += 1
        if self._since_miss >= GUARD_RELAX and self._guard > GUARD_MIN:
            self._guard = max(GUARD_MIN, self._guard / 2.0)
            self._since_miss = 0
