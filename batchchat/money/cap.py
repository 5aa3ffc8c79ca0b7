"""A hard spending cap: a request's worst case is reserved before it is sent, and settled with its real cost.

    ledger = SpendLedger(cap=5.00)
    if not ledger.try_reserve(worst):       # worst = worst_case_cost(price, prompt_estimate, completion_cap)
        ...                                 # stop dispatching: in-flight requests finish, the run ends "capped"
    ... send ...
    ledger.settle(worst, actual)            # a billed answer: actual = usage_cost(price, usage)
    ledger.release(worst)                   # not billed: refused before it ran (429, connection refused)

Reserved + spent never pass the cap as long as every settled cost is within its reservation, which holds when the
reservation is a true worst case. A provider's miscount (an answer billed above its reservation) is still
recorded as spent, in full, and counted in `overruns`; if it carries the spending past the cap, every further
reservation is refused.

Retries: every attempt is a request of its own to the ledger. Reserve before each attempt; settle each attempt
that got a billed answer (any answer that carries usage, whatever its status) with its real cost; settle an
attempt whose fate is unknown (a timeout or a dropped connection after the request was sent: the provider may
have run and billed it) at its full reservation; release only an attempt that certainly was not billed.
So a retried request's every paid attempt is spent.

Amounts are kept as integer nano-dollars, so that reserving and releasing the same amount leaves no residue, and a
reservation is rounded up: the ledger never holds less than it was asked to. Pure: no clock, no I/O, no asyncio
(a shared ledger in Redis offers the same methods).
"""

from __future__ import annotations

import math
from typing import Any

from batchchat.errors import UsageError

NANO = 1_000_000_000  # ledger units per USD


def units_up(amount: float) -> int:
    """USD to nano-dollars, rounded up (what a reservation holds)."""
    return math.ceil(amount * NANO - 1e-6)


def units(amount: float) -> int:
    """USD to nano-dollars, rounded to the nearest."""
    return round(amount * NANO)


def _check(name: str, amount: float) -> None:
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"{name} must be a finite amount of USD, zero or more, got {amount!r}")


class SpendLedger:
    """Money spent, money reserved for requests in flight, and the cap they may not pass together."""

    __slots__ = ("_cap", "_reserved", "_spent", "overrun_usd", "overruns")

    def __init__(self, cap: float) -> None:
        _check("cap", cap)
        self._cap = units(cap)
        self._reserved = 0
        self._spent = 0
        self.overruns = 0  # answers billed above their reservation (a provider's miscount)
        self.overrun_usd = 0.0  # by how much, in all

    @property
    def cap(self) -> float:
        """The cap, USD."""
        return self._cap / NANO

    @property
    def spent(self) -> float:
        """USD billed so far."""
        return self._spent / NANO

    @property
    def reserved(self) -> float:
        """USD held for requests in flight."""
        return self._reserved / NANO

    @property
    def remaining(self) -> float:
        """USD that may still be reserved (never below zero)."""
        return max(0, self._cap - self._spent - self._reserved) / NANO

    def try_reserve(self, amount: float) -> bool:
        """Hold `amount` for a request about to be sent, if reserved + spent + amount stay within the cap."""
        _check("amount", amount)
        units = units_up(amount)
        if self._reserved + self._spent + units > self._cap:
            return False
        self._reserved += units
        return True

    def settle(self, reserved: float, actual: float) -> None:
        """A request that was billed: its reservation becomes `actual` spent. An `actual` above the reservation is
        a provider's miscount: spent in full all the same, and counted in `overruns`."""
        _check("reserved", reserved)
        _check("actual", actual)
        held, cost = units_up(reserved), units(actual)
        self._reserved = max(0, self._reserved - held)
        self._spent += cost
        if cost > held:
            self.overruns += 1
            self.overrun_usd += (cost - held) / NANO

    def release(self, reserved: float) -> None:
        """A request that was not sent, or certainly not billed: its reservation is given back."""
        _check("reserved", reserved)
        self._reserved = max(0, self._reserved - units_up(reserved))

    def to_dict(self) -> dict[str, Any]:
        """For the summary: the cap, what was spent, what is still held, and any overrun."""
        return {"cap_usd": self.cap, "spent_usd": self.spent, "reserved_usd": self.reserved,
                "remaining_usd": self.remaining, "overruns": self.overruns, "overrun_usd": self.overrun_usd}


def parse_max_cost(value: Any) -> float:
    """`--max-cost`: a positive amount of USD (`5`, `0.25`, `$5`); `UsageError` for zero, negative or non-numeric."""
    text = str(value).strip()
    if isinstance(value, bool):
        amount = math.nan
    elif isinstance(value, int | float):
        amount = float(value)
    else:
        try:
            amount = float(text.removeprefix("$"))
        except ValueError:
            amount = math.nan
    if not math.isfinite(amount):
        raise UsageError(f"--max-cost: must be an amount in USD, such as 5 or 0.25, got {text!r}")
    if amount <= 0:
        raise UsageError(f"--max-cost: must be more than zero, got {text!r}")
    return amount
