"""`SharedStore`: the shared budget store (Redis) with what a run does when it cannot be reached.

Every budget operation goes to the shared store. When it raises `SharedStoreUnavailable`:
- dispatch pauses: `reserve` (and `reserve_spend`) wait, so nothing is sent unbudgeted, while the connection
  is retried with a growing backoff (`RETRY_FIRST` doubling to `RETRY_MAX` seconds);
- what must still reach the budget (settles, refunds, a 429's cooldown, learned limits) is kept, summed per
  budget, and replayed once the store answers again;
- after `timeout` seconds without the store, the run stops with `SharedStoreLost` (exit 8), unless `fallback`
  is "local": then budgets are kept in this process (`LocalStore`, primed: paced from the first request),
  loudly, because N processes pacing alone may together spend N times the limit; the shared store is tried
  again every `PROBE_EVERY` seconds and used again as soon as it answers.
What a round trip costs (about 180 µs of client CPU with redis-py here) is paid less often: settles and refunds
are summed per budget and sent every `FLUSH_EVERY` seconds, and where a budget is large enough a reservation
takes a small lease (up to `LEASE_MAX` requests and their tokens, at most `LEASE_SHARE` of the burst, kept
`LEASE_TTL` seconds, given back on a 429) so that the next requests need no round trip.
It also keeps this process listed on every budget it draws on (`keep_listed`: register, then a heartbeat every
`HEARTBEAT_EVERY` seconds), for `batchchat status --shared`. `clock` and `sleep` are the seams for tests.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from batchchat.errors import BatchchatError, ExitCode, UsageError
from batchchat.pacing.bucket import Limits, capacity
from batchchat.pacing.redis_store import CAP_RECOVERY, CapRecovering, SharedStoreUnavailable
from batchchat.pacing.store import BudgetStore, LocalStore, ProcessInfo, Snapshot

FALLBACKS = ("stop", "local")
DEFAULT_TIMEOUT = 60.0  # seconds without the shared store before the run stops (or falls back)
RETRY_FIRST = 0.1  # seconds before the first reconnection attempt; doubles each time...
RETRY_MAX = 2.0  # ...up to this
PROBE_EVERY = 5.0  # seconds between attempts to get back to the shared store after falling back to local
LEASE_MAX = 16  # requests one round trip may take for this process ahead of need...
LEASE_SHARE = 0.05  # ...and at most this share of the budget's burst (so a lease never makes a burst of its own)
LEASE_TTL = 0.25  # seconds a lease is kept; what is left of it then goes back to the budget
FLUSH_EVERY = 0.05  # seconds between round trips that carry settles and refunds (summed per budget meanwhile)
HEARTBEAT_EVERY = 5.0  # seconds between heartbeats (a process is dropped after `store.PROCESS_TTL` of silence)
CAP_RESTORE_EVERY = CAP_RECOVERY / 3  # seconds between checks that the store still holds this process's spending


class SharedStoreLost(BatchchatError):
    """The shared budget store stayed unreachable past `--shared-timeout`: the run stopped (a rerun resumes)."""

    exit_code = ExitCode.SHARED_STORE_LOST


@dataclass(slots=True)
class _Pending:
    """What a budget must still be told once the store is back (summed while it is not)."""

    limits: Limits
    tokens: float = 0.0
    requests: float = 0.0
    cooldown_until: float = 0.0  # on this process's clock
    rpm: float | None = None
    tpm: float | None = None


@dataclass(slots=True)
class _Lease:
    """Requests (and their tokens) this process took from the shared budget ahead of need, until `until`."""

    limits: Limits
    requests: float
    tokens: float
    until: float


def lease_size(limits: Limits, tokens: float) -> int:
    """How many requests one round trip takes: at most `LEASE_MAX`, and at most `LEASE_SHARE` of the budget's
    burst in requests and in tokens (a budget of 6,000 RPM holds 50 requests: no lease, 1 at a time)."""
    size = float(LEASE_MAX)
    if limits.rpm is not None:
        size = min(size, LEASE_SHARE * capacity(limits.rpm, limits.burst_seconds))
    if limits.tpm is not None and tokens > 0:
        size = min(size, LEASE_SHARE * capacity(limits.tpm, limits.burst_seconds) / tokens)
    return max(1, int(size))


_UP, _DOWN, _LOCAL, _LOST = "up", "down", "local", "lost"


class SharedStore:
    """A `BudgetStore` over `inner` (a `RedisStore`) that pauses, retries, and stops or falls back on an outage."""

    def __init__(
        self,
        inner: BudgetStore,
        *,
        url: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        fallback: str = "stop",
        echo: Callable[[str], None] = lambda text: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
    ) -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, not {fallback!r}")
        self.inner = inner
        self.url = url or str(getattr(inner, "url", "the shared store"))
        self.timeout = timeout
        self.fallback = fallback
        self._echo = echo
        self._clock = clock
        self._sleep = sleep
        self.local = LocalStore(clock)
        self.state = _UP
        self.outages = 0  # how many times the store was lost (for reports and tests)
        self._down_since = 0.0
        self._backoff = RETRY_FIRST
        self._next_probe = 0.0
        self._lock = anyio.Lock()
        self._pending: dict[str, _Pending] = {}
        self._leases: dict[str, _Lease] = {}
        self._flushed = -math.inf
        self._flushing = False
        self._spend_pending: list[tuple[str, float, float, str]] = []
        self._keys: dict[str, None] = {}  # budgets drawn on, in order (for keep_listed)
        self._caps: dict[tuple[str, str], Callable[[], tuple[float, float]]] = {}  # (cap, holder) -> its figures
        self.process_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"

    # -- the outage policy ---------------------------------------------------------------------------------

    def _lost_contact(self, exc: SharedStoreUnavailable) -> None:
        if self.state != _UP:
            return
        self.state = _DOWN
        self.outages += 1
        self._down_since = self._clock()
        self._backoff = RETRY_FIRST
        then = ("then fall back to local budgets (--shared-fallback local)" if self.fallback == "local"
                else "then stop (exit 8)")
        self._echo(f"batchchat: {exc}; dispatch paused (nothing is sent unbudgeted), retrying for up to "
                   f"{self.timeout:g} s, {then}")

    async def _wait_for_store(self) -> None:
        """While the store is down: retry it with backoff until it answers or `timeout` has passed."""
        async with self._lock:
            while self.state == _DOWN:
                left = self._down_since + self.timeout - self._clock()
                if left <= 0.0:
                    self._expire()
                    return
                await self._sleep(min(self._backoff, left))
                self._backoff = min(RETRY_MAX, self._backoff * 2.0)
                await self._probe()

    async def _probe(self) -> bool:
        """Try the store once; when it answers, replay what is pending and use it again."""
        try:
            await self._ping()
            await self._replay()
        except SharedStoreUnavailable:
            if self.state == _LOCAL:
                self._next_probe = self._clock() + PROBE_EVERY
            return False
        was = self.state
        self.state = _UP
        away = self._clock() - self._down_since
        if was == _LOCAL:
            self._echo(f"batchchat: shared budget store {self.url} is back after {away:.0f} s: budgets are shared "
                       "again")
        else:
            self._echo(f"batchchat: shared budget store {self.url} is back after {away:.1f} s: dispatch resumes")
        return True

    async def _ping(self) -> None:
        ping = getattr(self.inner, "ping", None)
        if ping is not None:
            await ping()
        else:
            await self.inner.learned_limits("ping")

    def _expire(self) -> None:
        if self.fallback == "local":
            self.state = _LOCAL
            self._next_probe = self._clock() + PROBE_EVERY
            self._echo(
                f"batchchat: WARNING: shared budget store {self.url} unreachable for {self.timeout:g} s: falling "
                "back to LOCAL budgets (--shared-fallback local). Each process now paces alone as if it owned the "
                "whole limit: together the fleet MAY EXCEED THE LIMIT and draw 429s until the store is back."
            )
        else:
            self.state = _LOST

    def _lost_error(self) -> SharedStoreLost:
        return SharedStoreLost(
            f"shared budget store {self.url} unreachable for {self.timeout:g} s (--shared-timeout); stopped so "
            "that nothing is sent outside the fleet's budget. Rerun the same command to resume once Redis is back, "
            "or pass --shared-fallback local to keep going on local budgets"
        )

    def _cap_lost_error(self) -> SharedStoreLost:
        return SharedStoreLost(
            f"shared budget store {self.url} unreachable for {self.timeout:g} s: the fleet's spending cap "
            "(--max-cost with --shared) cannot be kept without it, so no more requests are sent, even with "
            "--shared-fallback local (which applies to rate budgets only). Rerun to resume once Redis is back"
        )

    async def _replay(self) -> None:
        """Send the store what it has not been told yet (each budget's sums, once); what a failure leaves unsent
        stays pending. Changes made meanwhile by other tasks start a new pending entry."""
        now = self._clock()
        for key in list(self._pending):
            item = self._pending.pop(key)
            try:
                if item.tokens:
                    await self.inner.adjust(key, item.limits, item.tokens)
                    item.tokens = 0.0
                if item.requests:
                    await self.inner.adjust_requests(key, item.limits, item.requests)
                    item.requests = 0.0
                if item.cooldown_until > now:
                    await self.inner.pause(key, item.limits, item.cooldown_until - now)
                item.cooldown_until = 0.0
                if item.rpm is not None or item.tpm is not None:
                    await self.inner.publish_limits(key, item.rpm, item.tpm)
                    item.rpm = item.tpm = None
            except BaseException:
                self._restore(key, item)
                raise
        while self._spend_pending:
            cap_key, reserved, actual, holder = self._spend_pending[0]
            await self.inner.settle_spend(cap_key, reserved, actual, holder)
            self._spend_pending.pop(0)
        self._flushed = self._clock()

    def _restore(self, key: str, item: _Pending) -> None:
        """Put back what `_replay` could not send, summed with anything pending since."""
        later = self._pending.get(key)
        if later is None:
            self._pending[key] = item
            return
        later.tokens += item.tokens
        later.requests += item.requests
        later.cooldown_until = max(later.cooldown_until, item.cooldown_until)
        later.rpm = later.rpm if later.rpm is not None else item.rpm
        later.tpm = later.tpm if later.tpm is not None else item.tpm

    async def _admitting(self) -> bool:
        """Before an admission: True to use the shared store, False to use the local one; waits through an
        outage and raises `SharedStoreLost` when it lasts past the timeout (fallback "stop")."""
        while True:
            if self.state == _UP:
                return True
            if self.state == _LOCAL:
                if self._clock() >= self._next_probe and not self._lock.locked():
                    async with self._lock:
                        if self.state == _LOCAL and await self._probe():
                            return True
                return False
            if self.state == _LOST:
                raise self._lost_error()
            await self._wait_for_store()

    def _pending_for(self, key: str, limits: Limits) -> _Pending:
        item = self._pending.get(key)
        if item is None:
            item = self._pending[key] = _Pending(limits)
        else:
            item.limits = limits
        return item

    # -- BudgetStore ---------------------------------------------------------------------------------------

    async def reserve(self, key: str, limits: Limits, tokens: float) -> float:
        """See `BudgetStore.reserve`: from this process's lease when it holds one, else from the shared store
        (taking a new lease); waits while the shared store is unreachable (nothing unbudgeted)."""
        self._keys[key] = None
        lease = self._leases.get(key)
        if lease is not None:
            if (lease.requests >= 1.0 and lease.tokens + 1e-9 >= tokens and lease.limits == limits
                    and self._clock() < lease.until and self.state == _UP):
                lease.requests -= 1.0
                lease.tokens -= tokens
                return 0.0
            await self._give_back(key)
        while True:
            if not await self._admitting():
                return await self.local.reserve(key, limits, tokens)
            try:
                return await self._reserve_leasing(key, limits, tokens)
            except SharedStoreUnavailable as exc:
                self._lost_contact(exc)

    async def _reserve_leasing(self, key: str, limits: Limits, tokens: float) -> float:
        """One request now, plus a lease of `size - 1` more (and their tokens, as many as this one's) when the
        budget is large enough that a few requests are a small share of its burst: one round trip to take the
        lot and its tokens atomically, one more to charge the extra requests."""
        size = lease_size(limits, tokens)
        if size > 1:
            wait = await self.inner.reserve(key, limits, tokens * size)
            if wait == 0.0:
                await self.inner.adjust_requests(key, limits, size - 1.0)
                self._leases[key] = _Lease(limits, size - 1.0, tokens * (size - 1), self._clock() + LEASE_TTL)
                return 0.0
        return await self.inner.reserve(key, limits, tokens)

    async def _give_back(self, key: str) -> None:
        """Return what is left of a lease to the budget (an expired one, or one that does not fit a request)."""
        lease = self._leases.pop(key, None)
        if lease is not None and (lease.requests > 0.0 or lease.tokens > 0.0):
            await self._change(key, lease.limits, tokens=-lease.tokens, requests=-lease.requests)

    async def _give_back_expired(self) -> None:
        now = self._clock()
        for key in [key for key, lease in self._leases.items() if now >= lease.until]:
            await self._give_back(key)

    async def adjust(self, key: str, limits: Limits, tokens: float) -> None:
        """See `BudgetStore.adjust` (kept and replayed while the store is away)."""
        await self._change(key, limits, tokens=tokens)

    async def adjust_requests(self, key: str, limits: Limits, requests: float) -> None:
        """See `BudgetStore.adjust_requests` (kept and replayed while the store is away)."""
        await self._change(key, limits, requests=requests)

    async def pause(self, key: str, limits: Limits, seconds: float) -> None:
        """See `BudgetStore.pause` (kept and replayed, if still running, while the store is away)."""
        await self._change(key, limits, pause=seconds)

    async def _change(self, key: str, limits: Limits, *, tokens: float = 0.0, requests: float = 0.0,
                      pause: float = 0.0) -> None:
        """Settles and refunds are summed per budget and sent at most every `FLUSH_EVERY` seconds (one round trip
        for many answers); a cooldown goes at once. While the store is away they wait for it."""
        if self.state == _LOCAL:
            if tokens:
                await self.local.adjust(key, limits, tokens)
            if requests:
                await self.local.adjust_requests(key, limits, requests)
            if pause:
                await self.local.pause(key, limits, pause)
            return
        if pause and key in self._leases:  # a 429: nothing more goes on what this process leased
            await self._give_back(key)
        item = self._pending_for(key, limits)
        item.tokens += tokens
        item.requests += requests
        if pause:
            item.cooldown_until = max(item.cooldown_until, self._clock() + pause)
        await self.flush(force=bool(pause))

    async def flush(self, force: bool = False) -> None:
        """Send pending settles now if `FLUSH_EVERY` has passed since the last time (or `force`)."""
        if self.state != _UP or self._flushing or not (self._pending or self._spend_pending):
            return
        if not force and self._clock() - self._flushed < FLUSH_EVERY:
            return
        self._flushing = True
        try:
            await self._replay()
        except SharedStoreUnavailable as exc:
            self._lost_contact(exc)
        finally:
            self._flushing = False

    async def snapshot(self, key: str, limits: Limits) -> Snapshot:
        """See `BudgetStore.snapshot`: the cooldown as the fleet sees it, and levels that leave nothing to charge.

        A budget's header reconciliation charges what the server counts beyond what this process accounts for
        (another client on the key). In a fleet the shared budget already holds every process's spending, and
        against a window server each process would take the others' sends for a stranger's: the fleet would
        charge itself several times over. So the levels read here are unbounded (nothing beyond them to
        charge); the true levels stay in the store (`inner.snapshot`).
        """
        if self.state == _LOCAL:
            return await self.local.snapshot(key, limits)
        cooldown = 0.0
        if self.state == _UP:
            try:
                cooldown = (await self.inner.snapshot(key, limits)).cooldown
            except SharedStoreUnavailable as exc:
                self._lost_contact(exc)
        if self.state != _UP:
            item = self._pending.get(key)
            cooldown = 0.0 if item is None else max(0.0, item.cooldown_until - self._clock())
        return Snapshot(math.inf, math.inf, cooldown)

    async def publish_limits(self, key: str, rpm: float | None, tpm: float | None) -> None:
        """See `BudgetStore.publish_limits` (kept and replayed while the store is away)."""
        await self.local.publish_limits(key, rpm, tpm)
        if self.state == _UP:
            try:
                await self.inner.publish_limits(key, rpm, tpm)
                return
            except SharedStoreUnavailable as exc:
                self._lost_contact(exc)
        item = self._pending.get(key) or self._pending_for(key, Limits())  # keeps the limits of a pending charge
        item.rpm = rpm if rpm is not None else item.rpm
        item.tpm = tpm if tpm is not None else item.tpm

    async def learned_limits(self, key: str) -> tuple[float | None, float | None]:
        """See `BudgetStore.learned_limits` (this process's own knowledge while the store is away)."""
        if self.state == _UP:
            try:
                return await self.inner.learned_limits(key)
            except SharedStoreUnavailable as exc:
                self._lost_contact(exc)
        return await self.local.learned_limits(key)

    async def register(self, key: str, process_id: str, info: Mapping[str, str | int | float]) -> None:
        """See `BudgetStore.register`."""
        await self.inner.register(key, process_id, info)

    async def heartbeat(self, key: str, process_id: str) -> None:
        """See `BudgetStore.heartbeat`."""
        await self.inner.heartbeat(key, process_id)

    async def processes(self, key: str) -> list[ProcessInfo]:
        """See `BudgetStore.processes`."""
        return await self.inner.processes(key)

    async def reserve_spend(self, cap_key: str, cap: float, amount: float, holder: str = "-",
                            own: tuple[float, float] = (0.0, 0.0)) -> bool:
        """See `BudgetStore.reserve_spend`: waits while the shared store is unreachable, as `reserve` does.

        A fleet's spending cap never falls back to local: N processes each holding the whole cap could spend N
        times it. Past `--shared-timeout` a capped run stops (`SharedStoreLost`, exit 8) whatever `fallback` says.
        """
        while True:
            if not await self._admitting():
                raise self._cap_lost_error()
            try:
                with anyio.CancelScope(shield=True):  # one round trip: a cancel must not lose a reservation made
                    return await self.inner.reserve_spend(cap_key, cap, amount, holder, own)
            except SharedStoreUnavailable as exc:
                self._lost_contact(exc)
            except CapRecovering:  # Redis lost the cap: its live processes are putting their spending back
                await self._sleep(CAP_RESTORE_EVERY / 2)

    async def settle_spend(self, cap_key: str, reserved: float, actual: float, holder: str = "-") -> None:
        """See `BudgetStore.settle_spend` (kept and replayed while the store is away: the fleet's spending must
        reach the shared cap, whatever the rate budgets fell back to)."""
        if self.state == _UP:
            try:
                await self.inner.settle_spend(cap_key, reserved, actual, holder)
                return
            except SharedStoreUnavailable as exc:
                self._lost_contact(exc)
        self._spend_pending.append((cap_key, reserved, actual, holder))

    async def restore_spend(self, cap_key: str, holder: str, own: tuple[float, float]) -> None:
        """See `BudgetStore.restore_spend` (nothing while the store is away: `keep_listed` tries again)."""
        if self.state == _UP:
            try:
                await self.inner.restore_spend(cap_key, holder, own)
            except SharedStoreUnavailable as exc:
                self._lost_contact(exc)

    def watch_cap(self, cap_key: str, holder: str, figures: Callable[[], tuple[float, float]]) -> None:
        """Have `keep_listed` put `holder`'s (spent, reserved) from `figures()` back into the cap every
        `CAP_RESTORE_EVERY` seconds where the store lost them (Redis restarted empty)."""
        self._caps[cap_key, holder] = figures

    async def cap_usage(self, cap_key: str) -> tuple[float, float]:
        """See `BudgetStore.cap_usage`: a fleet's cap is known only in the store, so this waits through an outage
        as `reserve_spend` does (and stops the run past `--shared-timeout`)."""
        while True:
            if not await self._admitting():
                raise self._cap_lost_error()
            try:
                return await self.inner.cap_usage(cap_key)
            except SharedStoreUnavailable as exc:
                self._lost_contact(exc)

    async def close(self) -> None:
        """Give back the leases and send what is pending (if the store answers), then release its connections."""
        for key in list(self._leases):
            await self._give_back(key)
        await self.flush(force=True)
        await self.inner.close()

    # -- being listed ----------------------------------------------------------------------------------------

    async def keep_listed(self, info: Mapping[str, str | int | float], every: float = HEARTBEAT_EVERY) -> None:
        """Register this process on each budget as it first draws on it, and heartbeat them every `every`
        seconds, until cancelled. Quiet while the store is away (the budget operations report the outage)."""
        registered: dict[str, None] = {}
        last = -every
        restored = -CAP_RESTORE_EVERY
        while True:
            if self._caps and self._clock() - restored >= CAP_RESTORE_EVERY:
                restored = self._clock()
                for (cap_key, holder), figures in list(self._caps.items()):
                    await self.restore_spend(cap_key, holder, figures())
            new = [key for key in self._keys if key not in registered]
            due = self._clock() - last >= every
            if self.state == _UP and (new or due):
                try:
                    for key in new:
                        await self.inner.register(key, self.process_id, info)
                        registered[key] = None
                    if due:
                        for key in registered:
                            await self.inner.heartbeat(key, self.process_id)
                        last = self._clock()
                except SharedStoreUnavailable:
                    pass
            await self._give_back_expired()
            await self.flush()
            await self._sleep(min(every, LEASE_TTL))


def open_shared(settings: Any, echo: Callable[[str], None]) -> SharedStore:
    """The store of a run with `--shared` (`settings`: `RunSettings`): a `RedisStore` behind the outage policy."""
    from batchchat.pacing.redis_store import RedisStore

    try:
        inner = RedisStore(settings.shared)
    except ValueError as exc:
        raise UsageError(f"--shared: {exc}") from None
    return SharedStore(inner, url=inner.url, timeout=settings.shared_timeout, fallback=settings.shared_fallback,
                       echo=echo)


# -- watching a fleet ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget in the shared store and the live processes drawing on it."""

    key: str  # the budget's namespace (a hash: no key or model in Redis)
    label: str  # the model, when the caller named it; else a short hash
    processes: list[ProcessInfo]


async def fleet_status(store: Any, labels: Mapping[str, str]) -> list[BudgetStatus]:
    """Every budget in Redis (`store`: a `RedisStore`) with a live process, and every budget in `labels`
    ({namespace: model}) even idle.

    Budgets are found by their process lists (`batchchat:{<namespace>}:procs`); a budget is named by its model
    only when the caller names the model (the namespace is a hash of key, endpoint and model).
    """
    found = []
    for key in dict.fromkeys([*labels, *await store.tagged("procs")]):
        processes = await store.processes(key)
        if processes or key in labels:
            found.append(BudgetStatus(key, labels.get(key, f"budget {key[:12]}"), processes))
    return found


def render_status(url: str, budgets: list[BudgetStatus]) -> str:
    """The fleet as text: a paragraph per budget, a line per process."""
    if not budgets:
        return f"{url}: no batchchat process is drawing on a shared budget"
    lines = []
    for budget in budgets:
        requests = sum(p.requests for p in budget.processes)
        tokens = sum(p.tokens for p in budget.processes)
        count = len(budget.processes)
        lines.append(f"{budget.label}: {count} process{'es' if count != 1 else ''}, {requests:,.0f} requests and "
                     f"{tokens:,.0f} tokens in the last minute")
        for p in budget.processes:
            info = " ".join(f"{k}={v}" for k, v in p.info.items())
            lines.append(f"  {p.process_id}  {p.requests:>9,.0f} requests  {p.tokens:>12,.0f} tokens  "
                         f"heard {p.age:.0f} s ago  {info}")
    return "\n".join(lines)
