"""Where a budget's state lives: the `BudgetStore` protocol and `LocalStore`, the in-process store.

A store holds budgets keyed by an opaque string (for a shared store, `redis_store.namespace(...)`: a hash, never
the API key) and runs the pure arithmetic of `bucket.py` on them; the limits are passed on every call. Besides
the buckets a store keeps what every process must see: a cooldown, the limits learned from headers, the live
processes drawing on a budget (with what each spent in the last minute), and spending caps.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from batchchat.pacing import bucket
from batchchat.pacing.bucket import BucketState, Limits


def hashed_name(*parts: str, domain: bytes = b"") -> str:
    """A name in a store that holds none of `parts` (an API key among them): a hex SHA-256 of `domain` and each
    part, length-prefixed so that no two lists of parts run together."""
    digest = hashlib.sha256(domain)
    for part in parts:
        data = part.encode()
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


PROCESS_TTL = 30.0  # seconds a process stays listed after its last heartbeat (heartbeat every few seconds)
SPEND_WINDOW = 60  # seconds of spending a heartbeat reports


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A budget as of now: its levels (spent, not yet leaked) and the seconds of cooldown left."""

    requests: float
    tokens: float
    cooldown: float


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A live process drawing on a budget: what it registered, what it spent in the last minute, when last heard."""

    process_id: str
    info: Mapping[str, str | int | float]
    requests: float
    tokens: float
    age: float  # seconds since its last heartbeat


@runtime_checkable
class BudgetStore(Protocol):
    """The operations a budget needs from where its state lives (in process, or Redis for a fleet)."""

    async def reserve(self, key: str, limits: Limits, tokens: float) -> float:
        """One request and `tokens` taken together: 0.0; else nothing taken and the seconds to wait."""
        ...

    async def adjust(self, key: str, limits: Limits, tokens: float) -> None:
        """Charge `tokens` (negative: refund) to the token level."""
        ...

    async def adjust_requests(self, key: str, limits: Limits, requests: float) -> None:
        """Charge `requests` (negative: refund) to the request level."""
        ...

    async def pause(self, key: str, limits: Limits, seconds: float) -> None:
        """A cooldown of `seconds` for every caller of the budget; buckets left full."""
        ...

    async def snapshot(self, key: str, limits: Limits) -> Snapshot:
        """The budget's levels and cooldown as of now (for header reconciliation and status)."""
        ...

    async def publish_limits(self, key: str, rpm: float | None, tpm: float | None) -> None:
        """Record limits learned from headers for every process (None: leave that one as it is)."""
        ...

    async def learned_limits(self, key: str) -> tuple[float | None, float | None]:
        """The (rpm, tpm) last published for the budget (None: none known)."""
        ...

    async def register(self, key: str, process_id: str, info: Mapping[str, str | int | float]) -> None:
        """List this process as drawing on the budget, with `info` (host, pid, shard...; never a key or model)."""
        ...

    async def heartbeat(self, key: str, process_id: str) -> None:
        """Keep the process listed and publish what it spent on the budget in the last minute."""
        ...

    async def processes(self, key: str) -> list[ProcessInfo]:
        """The processes heard from within `PROCESS_TTL`, by process id."""
        ...

    async def reserve_spend(self, cap_key: str, cap: float, amount: float, holder: str = "-",
                            own: tuple[float, float] = (0.0, 0.0)) -> bool:
        """Reserve `amount` for `holder` (a process) against `cap` if spent + reserved + amount stays within it.
        `own`: what the holder counts as its spent and reserved, put back first where the store holds less (a
        store that lost its data must not let the fleet spend again what it spent)."""
        ...

    async def settle_spend(self, cap_key: str, reserved: float, actual: float, holder: str = "-") -> None:
        """Turn `holder`'s reservation of `reserved` into `actual` spending (the difference is refunded)."""
        ...

    async def restore_spend(self, cap_key: str, holder: str, own: tuple[float, float]) -> None:
        """Put back `holder`'s (spent, reserved) where the store holds less (it lost its data)."""
        ...

    async def cap_usage(self, cap_key: str) -> tuple[float, float]:
        """(spent, reserved) against the cap: settled spending, and reservations not yet settled."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class RecentSpend:
    """What one process spent on each budget in the last `SPEND_WINDOW` seconds, in one-second slots."""

    __slots__ = ("_clock", "_slots")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots: dict[str, deque[list[float]]] = {}

    def add(self, key: str, requests: float, tokens: float) -> None:
        """Count `requests` and `tokens` (either may be negative: a refund) now."""
        second = float(int(self._clock()))
        slots = self._slots.setdefault(key, deque())
        if slots and slots[-1][0] == second:
            slots[-1][1] += requests
            slots[-1][2] += tokens
        else:
            slots.append([second, requests, tokens])
            self._expire(slots, second)

    def totals(self, key: str) -> tuple[float, float]:
        """(requests, tokens) spent on `key` in the last minute."""
        slots = self._slots.get(key)
        if not slots:
            return 0.0, 0.0
        self._expire(slots, float(int(self._clock())))
        return sum(s[1] for s in slots), sum(s[2] for s in slots)

    @staticmethod
    def _expire(slots: deque[list[float]], second: float) -> None:
        while slots and slots[0][0] <= second - SPEND_WINDOW:
            slots.popleft()


@dataclass(slots=True)
class _Process:
    info: Mapping[str, str | int | float]
    seen: float
    requests: float = 0.0
    tokens: float = 0.0


@dataclass(slots=True)
class _Budget:
    state: BucketState = field(default_factory=BucketState)
    rpm: float | None = None
    tpm: float | None = None
    processes: dict[str, _Process] = field(default_factory=dict)


class LocalStore:
    """Budgets held in this process: the pure functions of `bucket.py` on `BucketState`s in a dict.

    `clock` is the seam for tests (a fake clock: pacing is tested without sleeping).
    """

    __slots__ = ("_budgets", "_caps", "_clock", "_process_ttl", "_registered", "_spend")

    def __init__(self, clock: Callable[[], float] = time.monotonic, process_ttl: float = PROCESS_TTL) -> None:
        self._clock = clock
        self._process_ttl = process_ttl
        self._budgets: dict[str, _Budget] = {}
        self._caps: dict[str, list[float]] = {}  # cap key -> [spent, reserved]
        self._spend = RecentSpend(clock)
        self._registered: dict[tuple[str, str], Mapping[str, str | int | float]] = {}

    def _budget(self, key: str) -> _Budget:
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = _Budget()
        return budget

    def state(self, key: str) -> BucketState:
        """The budget's raw state (for tests and inspection)."""
        return self._budget(key).state

    async def reserve(self, key: str, limits: Limits, tokens: float) -> float:
        """See `BudgetStore.reserve`."""
        wait = bucket.reserve(self._budget(key).state, limits, tokens, self._clock())
        if wait == 0.0:
            self._spend.add(key, 1.0, tokens)
        return wait

    async def adjust(self, key: str, limits: Limits, tokens: float) -> None:
        """See `BudgetStore.adjust`."""
        bucket.adjust(self._budget(key).state, limits, tokens, self._clock())
        self._spend.add(key, 0.0, tokens)

    async def adjust_requests(self, key: str, limits: Limits, requests: float) -> None:
        """See `BudgetStore.adjust_requests`."""
        bucket.adjust_requests(self._budget(key).state, limits, requests, self._clock())
        self._spend.add(key, requests, 0.0)

    async def pause(self, key: str, limits: Limits, seconds: float) -> None:
        """See `BudgetStore.pause`."""
        bucket.pause(self._budget(key).state, limits, seconds, self._clock())

    async def snapshot(self, key: str, limits: Limits) -> Snapshot:
        """See `BudgetStore.snapshot`."""
        now = self._clock()
        state = replace(self._budget(key).state)  # a read changes nothing (as in Redis)
        bucket.drain(state, limits, now)
        return Snapshot(state.requests, state.tokens, max(0.0, state.cooldown_until - now))

    async def publish_limits(self, key: str, rpm: float | None, tpm: float | None) -> None:
        """See `BudgetStore.publish_limits`."""
        budget = self._budget(key)
        if rpm is not None:
            budget.rpm = rpm
        if tpm is not None:
            budget.tpm = tpm

    async def learned_limits(self, key: str) -> tuple[float | None, float | None]:
        """See `BudgetStore.learned_limits`."""
        budget = self._budgets.get(key)
        return (None, None) if budget is None else (budget.rpm, budget.tpm)

    async def register(self, key: str, process_id: str, info: Mapping[str, str | int | float]) -> None:
        """See `BudgetStore.register`."""
        self._registered[key, process_id] = dict(info)
        await self.heartbeat(key, process_id)

    async def heartbeat(self, key: str, process_id: str) -> None:
        """See `BudgetStore.heartbeat` (a process dropped for silence is listed again)."""
        info = self._registered.get((key, process_id))
        if info is None:
            raise KeyError(f"process {process_id!r} is not registered on this budget")
        requests, tokens = self._spend.totals(key)
        self._budget(key).processes[process_id] = _Process(info, self._clock(), requests, tokens)

    async def processes(self, key: str) -> list[ProcessInfo]:
        """See `BudgetStore.processes`."""
        now = self._clock()
        budget = self._budgets.get(key)
        if budget is None:
            return []
        for pid in [pid for pid, p in budget.processes.items() if now - p.seen > self._process_ttl]:
            del budget.processes[pid]
        return [
            ProcessInfo(pid, p.info, p.requests, p.tokens, now - p.seen)
            for pid, p in sorted(budget.processes.items())
        ]

    async def reserve_spend(self, cap_key: str, cap: float, amount: float, holder: str = "-",
                            own: tuple[float, float] = (0.0, 0.0)) -> bool:
        """See `BudgetStore.reserve_spend` (one process: the holder and its own figures are not needed)."""
        entry = self._caps.setdefault(cap_key, [0.0, 0.0])
        if entry[0] + entry[1] + amount > cap + bucket.EPSILON:
            return False
        entry[1] += amount
        return True

    async def settle_spend(self, cap_key: str, reserved: float, actual: float, holder: str = "-") -> None:
        """See `BudgetStore.settle_spend`."""
        entry = self._caps.setdefault(cap_key, [0.0, 0.0])
        entry[1] = max(0.0, entry[1] - reserved)
        entry[0] += actual

    async def restore_spend(self, cap_key: str, holder: str, own: tuple[float, float]) -> None:
        """Nothing to restore: this store's data lives as long as its process."""

    async def cap_usage(self, cap_key: str) -> tuple[float, float]:
        """See `BudgetStore.cap_usage`."""
        entry = self._caps.get(cap_key)
        return (0.0, 0.0) if entry is None else (entry[0], entry[1])

    async def close(self) -> None:
        """Nothing to release."""
