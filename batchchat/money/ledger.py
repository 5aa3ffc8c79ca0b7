"""Where a spending cap's money is kept: this process (`LocalLedger`) or the fleet's shared store (`SharedLedger`).

`Spending` (guard.py) talks to either through `Ledger`: `try_reserve` a request's worst case before it is sent,
`settle` a billed attempt, `release` one certainly not billed. `spent` and `reserved` are this process's own
figures (for the progress line and to know whether its own requests in flight will free room); `usage()` is the
cap's as a whole: the same for a local ledger, the fleet's for a shared one.

A shared cap (`--max-cost` with `--shared`) lives in Redis under a hash of the API key, the endpoint and the cap's
name (`cap_key`): every process of a job that gives the same name draws on one cap, atomically (`cap.lua`), and the
fleet together never passes it. The name defaults to the input file's identity (`default_cap_name`: its name,
size and first MiB, so shards of one file on a shared disk, or copies of it on several hosts, agree), or is given
with `--cap-name`. A shared cap covers the job across reruns: it is kept for a day after its last use
(`redis_store.CAP_KEEP`), so a rerun after a crash or an exit 5 continues the same account (raise `--max-cost` to
resume), and the reservations of a process that crashed with requests in flight stay counted as spent (they may
have been billed).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from batchchat.money.cap import NANO, SpendLedger, units, units_up
from batchchat.pacing.store import BudgetStore, hashed_name

FIRST_BYTES = 1 << 20  # how much of the input file names its default cap


class Ledger(Protocol):
    """What `Spending` needs of a ledger."""

    shared: bool

    @property
    def cap(self) -> float: ...
    @property
    def spent(self) -> float: ...
    @property
    def reserved(self) -> float: ...
    async def try_reserve(self, amount: float) -> bool: ...
    async def settle(self, reserved: float, actual: float) -> None: ...
    async def release(self, reserved: float) -> None: ...
    async def usage(self) -> tuple[float, float]: ...
    def to_dict(self) -> dict[str, Any]: ...


class _Booked:
    """A ledger whose own figures (this process's) are kept in a `SpendLedger`, `book`."""

    book: SpendLedger

    @property
    def cap(self) -> float:
        """The cap, USD."""
        return self.book.cap

    @property
    def spent(self) -> float:
        """USD this process was billed."""
        return self.book.spent

    @property
    def reserved(self) -> float:
        """USD this process holds for its requests in flight."""
        return self.book.reserved


class LocalLedger(_Booked):
    """A cap kept by this process alone: `SpendLedger` behind the async `Ledger` interface."""

    shared = False

    def __init__(self, cap: float) -> None:
        self.book = SpendLedger(cap)

    async def try_reserve(self, amount: float) -> bool:
        """See `SpendLedger.try_reserve`."""
        return self.book.try_reserve(amount)

    async def settle(self, reserved: float, actual: float) -> None:
        """See `SpendLedger.settle`."""
        self.book.settle(reserved, actual)

    async def release(self, reserved: float) -> None:
        """See `SpendLedger.release`."""
        self.book.release(reserved)

    async def usage(self) -> tuple[float, float]:
        """(spent, reserved) of the cap: this process's."""
        return self.book.spent, self.book.reserved

    def to_dict(self) -> dict[str, Any]:
        """For the summary."""
        return self.book.to_dict()


class SharedLedger(_Booked):
    """A cap shared by every process of a job through the fleet's store (`BudgetStore.reserve_spend`...).

    This process's own spending is mirrored in `book`, a `SpendLedger` of the same cap (its `spent` and
    `reserved`, and any provider overrun); the fleet's figures are the store's. `fleet_spent` is the last the
    store said.
    """

    shared = True

    def __init__(self, store: BudgetStore, key: str, name: str, cap: float) -> None:
        self.store = store
        self.key = key
        self.name = name
        self.book = SpendLedger(cap)
        self.holder = getattr(store, "process_id", None) or secrets.token_hex(8)  # this process, in the store
        watch = getattr(store, "watch_cap", None)
        if watch is not None:  # a store that can lose its data (Redis restarted empty) gets ours back
            watch(key, self.holder, lambda: (self.book.spent, self.book.reserved))
        self.fleet_spent: float | None = None

    async def try_reserve(self, amount: float) -> bool:
        """Reserve `amount` against the fleet's cap (atomically in the store), and mirror it here."""
        own = (self.book.spent, self.book.reserved)  # put back first if the store lost them
        if not await self.store.reserve_spend(self.key, self.book.cap, _rounded_up(amount), self.holder, own):
            return False
        self.book.try_reserve(amount)  # the mirror (the store's figures include ours, so it fits here too)
        return True

    async def settle(self, reserved: float, actual: float) -> None:
        """A billed attempt: its reservation becomes `actual` spent, in the fleet's cap and here (the store
        first: what this process counts as spent is never more than the store holds for it, so that the store
        can tell a loss of its data from a settle on its way)."""
        await self.store.settle_spend(self.key, _rounded_up(reserved), units(actual) / NANO, self.holder)
        self.book.settle(reserved, actual)

    async def release(self, reserved: float) -> None:
        """An attempt certainly not billed: its reservation is given back to the fleet."""
        await self.store.settle_spend(self.key, _rounded_up(reserved), 0.0, self.holder)
        self.book.release(reserved)

    async def usage(self) -> tuple[float, float]:
        """(spent, reserved) by the whole fleet, from the store."""
        spent, reserved = await self.store.cap_usage(self.key)
        self.fleet_spent = spent
        return spent, reserved

    def to_dict(self) -> dict[str, Any]:
        """For the summary: this process's figures, and the fleet's cap name and spending."""
        data = self.book.to_dict()
        data["shared"] = {"name": self.name, "fleet_spent_usd": self.fleet_spent}
        return data


def _rounded_up(amount: float) -> float:
    """A reservation as `SpendLedger` holds it (nano-dollars, rounded up), so store and mirror agree."""
    return units_up(amount) / NANO


def cap_key(api_key: str | None, base_url: str, name: str) -> str:
    """A shared cap's name in the store: a hex SHA-256 of key, endpoint and cap name (never the key itself)."""
    return hashed_name(api_key or "", base_url.rstrip("/"), name, domain=b"batchchat spending cap")


def default_cap_name(path: Path, display: str) -> str:
    """The cap a job's processes share unless `--cap-name` says otherwise: the input's name (`display`: the
    file's as given, `<stdin>` for a spooled standard input), size and a hash of its first MiB (the same for
    shards of one file, or for copies of it on several hosts)."""
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(FIRST_BYTES)).hexdigest()[:16]
    return f"{Path(display).name}:{size}:{head}"
