"""What an answer's `x-ratelimit-remaining-*` says about other clients on the key, judged fairly.

The server's count (`limit - remaining`) is as of the moment it admitted the request; it is compared with the
most this process can account for at that same moment, never with its level later, when the answer comes
back (meanwhile the level has leaked for the whole latency: comparing those took our own sends for someone
else's and under-used small limits by a third). What this process accounts for is the larger of:
- its bucket's level at admission, bounded from above by the level now plus what leaked since, less what this
  process itself sent (or settled, or was given back) since (exact for one process while the level stays
  above empty; generous otherwise, and for a fleet, whose shared level holds the others' sends too), with the
  debt charged since, which stands for others' spending the server counted already;
- for a counter that is not a bucket (a window, whose reset is not what it holds over its rate; or a calendar
  minute, with no reset), everything this process sent within that window.
Only what the server counts beyond that, and beyond a tolerance (a tenth of a burst, one unit, 5% of the count
for tokens counted differently before an answer settles them), is another client's spending: it is charged to
the budget as debt, and debt that a later answer no longer bears out is refunded. So a client alone on its
key is never charged for itself, and the headers, which are evidence about a minute, cannot make a budget
slower than its plain limits.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from batchchat.pacing.bucket import Limits, capacity
from batchchat.pacing.headers import RateLimitHeaders
from batchchat.pacing.store import BudgetStore

RECENT_SPAN = 65.0  # seconds of our own sending kept (one-second slots) to judge a window's count
BUCKET_EVIDENCE = 8  # answers in a row whose reset is what they hold over the rate: the server is a bucket
COUNT_TOLERANCE = 0.05  # share of the server's count put down to counting (tokens estimated, not yet settled)


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted attempt: its charge, when, and what this process had moved in its levels once it was taken."""

    tokens: float
    at: float
    moved_requests: float
    moved_tokens: float


class _Recent:
    """What this budget sent in each of the last `RECENT_SPAN` seconds (one slot a second)."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: deque[list[float]] = deque()

    def add(self, now: float, requests: float, tokens: float) -> None:
        second = math.floor(now)
        slots = self._slots
        if slots and slots[-1][0] == second:
            slots[-1][1] += requests
            slots[-1][2] += tokens
            return
        slots.append([second, requests, tokens])
        while slots and slots[0][0] < second - RECENT_SPAN:
            slots.popleft()

    def within(self, now: float, seconds: float) -> tuple[float, float]:
        """(requests, tokens) sent in the whole seconds that overlap the last `seconds` (and any later ones)."""
        start = math.floor(now - seconds)
        requests = tokens = 0.0
        for second, r, t in reversed(self._slots):
            if second < start:
                break
            requests += r
            tokens += t
        return requests, tokens


class Reconciler:
    """One budget's account of what it moved in its levels, and the debt it charged for others' spending."""

    __slots__ = ("_bucketish", "_debt", "_moved", "_recent")

    def __init__(self) -> None:
        # requests, tokens this process added to its levels for its own requests (sends, settles, refunds); not the
        # debt: debt charged after a ticket stands for spending the server counts, and counts as ours for it
        self._moved = [0.0, 0.0]
        self._recent = _Recent()
        self._bucketish = [0, 0]
        self._debt = [0.0, 0.0, 0.0]  # requests, tokens charged for others' spending, as of time [2]

    def ticket(self, now: float, tokens: float) -> Ticket:
        """Count an admitted attempt (one request, `tokens`) and make its ticket."""
        self.sent(now, 1.0, tokens)
        return Ticket(tokens, now, self._moved[0], self._moved[1])

    def sent(self, now: float, requests: float, tokens: float) -> None:
        """Count what this process added to (or, negative, took from) its levels for its own requests."""
        self._moved[0] += requests
        self._moved[1] += tokens
        self._recent.add(now, requests, tokens)

    async def reconcile(self, store: BudgetStore, key: str, limits: Limits, headers: RateLimitHeaders,
                        ticket: Ticket, now: float) -> None:
        """Charge what the server counted beyond what this process can account for; refund debt it disowns."""
        snapshot = None
        dims = ((0, limits.rpm, headers.limit_requests, headers.remaining_requests, headers.reset_requests),
                (1, limits.tpm, headers.limit_tokens, headers.remaining_tokens, headers.reset_tokens))
        for i, paced, limit, remaining, reset in dims:
            if paced is None or limit is None or remaining is None:
                continue
            if snapshot is None:
                snapshot = await store.snapshot(key, limits)
            level = snapshot.requests if i == 0 else snapshot.tokens
            used = max(0.0, limit - remaining)  # what the server counted when it admitted this request
            rate = limit / 60.0
            # our level at admission, from above: now, plus what leaked since, less what we moved since
            moved_since = self._moved[i] - (ticket.moved_requests if i == 0 else ticket.moved_tokens)
            ours = level + max(0.0, now - ticket.at) * paced / 60.0 - moved_since
            if reset is not None and abs(reset * rate - used) <= 2.0 + 0.01 * used + 0.002 * rate:
                self._bucketish[i] += 1
            else:
                self._bucketish[i] = 0
            if self._bucketish[i] < BUCKET_EVIDENCE:
                # a window (a calendar minute when no reset is sent): it counts everything we sent within it
                span = 60.0 if reset is None else max(1.0, 2.0 * reset)
                ours = max(ours, self._recent.within(ticket.at, span + 0.5)[i])
            tolerance = 0.1 * capacity(paced, limits.burst_seconds) + 1.0 + (COUNT_TOLERANCE * used if i else 0.0)
            beyond = used - ours - tolerance
            if beyond > 0.0:
                await self._charge(store, key, limits, i, beyond, now)
            elif self._bucketish[i] >= BUCKET_EVIDENCE:
                await self._refund(store, key, limits, i, ours - used - tolerance, now, paced)

    async def _charge(self, store: BudgetStore, key: str, limits: Limits, i: int, amount: float, now: float) -> None:
        rate = (limits.rpm if i == 0 else limits.tpm) or 0.0
        await _adjust(store, key, limits, i, amount)
        self._debt[i] = self._outstanding(i, now, rate) + amount
        self._debt[2] = now

    def _outstanding(self, i: int, now: float, rate: float) -> float:
        """Debt charged for others' spending that has not leaked away yet."""
        return max(0.0, self._debt[i] - (now - self._debt[2]) * rate / 60.0)

    async def _refund(self, store: BudgetStore, key: str, limits: Limits, i: int, excess: float, now: float,
                      rate: float) -> None:
        """Give back up to `excess` of the debt charged for others, when the server no longer holds it."""
        refund = min(excess, self._outstanding(i, now, rate))
        if refund <= 0.0:
            return
        await _adjust(store, key, limits, i, -refund)
        self._debt[i] = self._outstanding(i, now, rate) - refund
        self._debt[2] = now


async def _adjust(store: BudgetStore, key: str, limits: Limits, i: int, amount: float) -> None:
    if i == 0:
        await store.adjust_requests(key, limits, amount)
    else:
        await store.adjust(key, limits, amount)
