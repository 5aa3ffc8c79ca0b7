"""`RedisStore`: budgets shared by every process and host that uses one key, kept in Redis.

Each operation is one Lua script (`batchchat/pacing/lua/*.lua`, the arithmetic of `bucket.py` line for line),
loaded once and called by its SHA: requests and tokens are checked and taken together, atomically, timed by the
Redis server's clock (hosts with skewed clocks agree). A budget's keys share one hash tag
(`batchchat:{<namespace>}:...`, one Redis Cluster slot); the namespace is a hash of key, endpoint and model, so
neither the API key nor the model name is ever written to Redis. Idle budgets expire. Any failure to reach
Redis raises `SharedStoreUnavailable`, so the caller can pause dispatch (nothing unbudgeted) and retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("shared budgets need the Redis client: pip install 'batchchat[redis]'") from exc

from batchchat.pacing.bucket import Limits
from batchchat.pacing.budget import budget_key
from batchchat.pacing.store import PROCESS_TTL, ProcessInfo, RecentSpend, Snapshot

BUDGET_KEEP = 300.0  # seconds an idle budget (empty, out of cooldown) is kept before it expires
CAP_KEEP = 86_400.0  # seconds a spending cap is kept after its last use
CAP_RECOVERY = 3.0  # seconds a cap that lost its data takes no reservation (live processes put theirs back)
SOCKET_TIMEOUT = 5.0  # seconds to connect, and to wait for an answer, before Redis counts as unreachable
MAX_CONNECTIONS = 64  # connections per store; more tasks than this wait their turn for one

T = TypeVar("T")


class CapRecovering(Exception):
    """A shared spending cap lost its data (Redis restarted empty) and is being put back by its live processes:
    no reservation is taken for `CAP_RECOVERY` seconds."""


class SharedStoreUnavailable(Exception):
    """The shared budget store (Redis) cannot be reached: nothing may be sent on its budgets until it is back."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"shared budget store {url} unreachable: {reason}")
        self.url = url


namespace = budget_key  # the budget's name in Redis: a hex SHA-256 of key, endpoint and model (none is stored)


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***` (safe to print)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _script(name: str) -> str:
    lua = resources.files("batchchat.pacing") / "lua"
    text = (lua / f"{name}.lua").read_text()
    if name in ("reserve", "adjust", "pause", "snapshot"):
        text = (lua / "_bucket.lua").read_text() + "\n" + text
    return text


def _arg(value: float | None) -> str:
    """A number for a script: exact (repr round-trips a double), '' for None."""
    return "" if value is None else repr(float(value))


def _opt(value: bytes | None) -> float | None:
    return None if value is None else float(value)


class RedisStore:
    """A `BudgetStore` in Redis (redis.asyncio), shared by every process that names the same budget keys.

    `clock` is for tests only: when given, scripts run at the times it returns instead of the server's `TIME`
    (a fleet must leave it None: the server's clock is the one all hosts agree on).
    """

    __slots__ = (
        "_budget_keep",
        "_cap_keep",
        "_clock",
        "_gate",
        "_pool",
        "_process_ttl",
        "_redis",
        "_registered",
        "_scripts",
        "_spend",
        "url",
    )

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] | None = None,
        budget_keep: float = BUDGET_KEEP,
        cap_keep: float = CAP_KEEP,
        process_ttl: float = PROCESS_TTL,
        socket_timeout: float = SOCKET_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.url = redact_url(url)
        self._clock = clock
        self._process_ttl = process_ttl
        self._budget_keep = budget_keep
        self._cap_keep = cap_keep
        try:
            # at most `max_connections`, and a task waits its turn for one in a fair queue (`_gate`; redis-py's
            # BlockingConnectionPool lets newcomers barge, and a starved waiter fails after its timeout)
            self._pool = aioredis.ConnectionPool.from_url(
                url,
                max_connections=max_connections,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                retry=Retry(NoBackoff(), 1),  # one quick retry (a dropped connection), then the caller decides
                health_check_interval=30,
            )
        except ValueError as exc:
            raise ValueError(f"not a Redis URL: {self.url} ({exc})") from None
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._gate = asyncio.Semaphore(max_connections)
        self._scripts = {
            name: self._redis.register_script(_script(name))
            for name in ("reserve", "adjust", "pause", "snapshot", "publish", "heartbeat", "processes", "cap")
        }
        self._spend = RecentSpend(clock or time.monotonic)
        self._registered: dict[tuple[str, str], Mapping[str, str | int | float]] = {}

    @staticmethod
    def budget_key(key: str) -> str:
        """The Redis key of a budget's hash (levels, cooldown, learned limits)."""
        return f"batchchat:{{{key}}}:budget"

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T:
        try:
            async with self._gate:
                return await work()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise SharedStoreUnavailable(self.url, _reason(exc)) from None

    def _now(self) -> str:
        return "" if self._clock is None else _arg(self._clock())

    async def _budget(self, name: str, key: str, limits: Limits, *extra: float) -> Any:
        args = [self._now(), _arg(limits.rpm), _arg(limits.tpm), _arg(limits.burst_seconds), _arg(self._budget_keep)]
        args.extend(_arg(x) for x in extra)
        return await self._call(lambda: self._scripts[name](keys=[self.budget_key(key)], args=args))

    async def reserve(self, key: str, limits: Limits, tokens: float) -> float:
        """See `BudgetStore.reserve` (one round trip: `reserve.lua`)."""
        wait = float(await self._budget("reserve", key, limits, tokens))
        if wait == 0.0:
            self._spend.add(key, 1.0, tokens)
        return wait

    async def adjust(self, key: str, limits: Limits, tokens: float) -> None:
        """See `BudgetStore.adjust`."""
        await self._budget("adjust", key, limits, 0.0, tokens)
        self._spend.add(key, 0.0, tokens)

    async def adjust_requests(self, key: str, limits: Limits, requests: float) -> None:
        """See `BudgetStore.adjust_requests`."""
        await self._budget("adjust", key, limits, requests, 0.0)
        self._spend.add(key, requests, 0.0)

    async def pause(self, key: str, limits: Limits, seconds: float) -> None:
        """See `BudgetStore.pause` (the cooldown is published in the budget's hash for every process)."""
        await self._budget("pause", key, limits, seconds)

    async def snapshot(self, key: str, limits: Limits) -> Snapshot:
        """See `BudgetStore.snapshot`."""
        requests, tokens, cooldown = await self._budget("snapshot", key, limits)
        return Snapshot(float(requests), float(tokens), float(cooldown))

    async def publish_limits(self, key: str, rpm: float | None, tpm: float | None) -> None:
        """See `BudgetStore.publish_limits`."""
        if rpm is None and tpm is None:
            return
        args = [_arg(rpm), _arg(tpm), _arg(self._budget_keep)]
        await self._call(lambda: self._scripts["publish"](keys=[self.budget_key(key)], args=args))

    async def learned_limits(self, key: str) -> tuple[float | None, float | None]:
        """See `BudgetStore.learned_limits`."""
        rpm, tpm = await self._call(lambda: self._redis.hmget(self.budget_key(key), ["lrpm", "ltpm"]))
        return _opt(rpm), _opt(tpm)

    def _process_keys(self, key: str) -> list[str]:
        return [f"batchchat:{{{key}}}:procs", f"batchchat:{{{key}}}:procinfo"]

    async def register(self, key: str, process_id: str, info: Mapping[str, str | int | float]) -> None:
        """See `BudgetStore.register`. `info` is stored as given: never put a key or a model name in it."""
        self._registered[key, process_id] = dict(info)
        await self.heartbeat(key, process_id)

    async def heartbeat(self, key: str, process_id: str) -> None:
        """See `BudgetStore.heartbeat`: this process's own count of the last minute on the budget."""
        info = self._registered.get((key, process_id))
        if info is None:
            raise KeyError(f"process {process_id!r} is not registered on this budget")
        requests, tokens = self._spend.totals(key)
        blob = orjson.dumps({"info": info, "requests": requests, "tokens": tokens})
        args = [self._now(), process_id, blob, _arg(self._process_ttl)]
        await self._call(lambda: self._scripts["heartbeat"](keys=self._process_keys(key), args=args))

    async def processes(self, key: str) -> list[ProcessInfo]:
        """See `BudgetStore.processes`."""
        args = [self._now(), _arg(self._process_ttl)]
        flat = await self._call(lambda: self._scripts["processes"](keys=self._process_keys(key), args=args))
        found = []
        for i in range(0, len(flat), 3):
            data = orjson.loads(flat[i + 2])
            found.append(
                ProcessInfo(flat[i].decode(), data["info"], data["requests"], data["tokens"], float(flat[i + 1]))
            )
        return sorted(found, key=lambda p: p.process_id)

    @staticmethod
    def cap_key(cap_key: str) -> str:
        """The Redis key of a spending cap's hash."""
        return f"batchchat:{{{cap_key}}}:cap"

    async def reserve_spend(self, cap_key: str, cap: float, amount: float, holder: str = "-",
                            own: tuple[float, float] = (0.0, 0.0)) -> bool:
        """See `BudgetStore.reserve_spend` (atomic across the fleet: `cap.lua`). Raises `CapRecovering` while
        the cap's hash recovers from a loss (`CAP_RECOVERY` seconds, in which live processes put theirs back)."""
        args = ["reserve", _arg(self._cap_keep), holder, _arg(own[0]), _arg(own[1]), _arg(CAP_RECOVERY), _arg(cap),
                _arg(amount)]
        result = await self._call(lambda: self._scripts["cap"](keys=[self.cap_key(cap_key)], args=args))
        if result == 2:
            raise CapRecovering(f"spending cap {cap_key[:12]} is recovering from a loss of its data in Redis")
        return bool(result)

    async def restore_spend(self, cap_key: str, holder: str, own: tuple[float, float]) -> None:
        """See `BudgetStore.restore_spend`."""
        args = ["restore", _arg(self._cap_keep), holder, _arg(own[0]), _arg(own[1]), _arg(CAP_RECOVERY)]
        await self._call(lambda: self._scripts["cap"](keys=[self.cap_key(cap_key)], args=args))

    async def settle_spend(self, cap_key: str, reserved: float, actual: float, holder: str = "-") -> None:
        """See `BudgetStore.settle_spend`."""
        args = ["settle", _arg(self._cap_keep), holder, _arg(reserved), _arg(actual)]
        await self._call(lambda: self._scripts["cap"](keys=[self.cap_key(cap_key)], args=args))

    async def cap_usage(self, cap_key: str) -> tuple[float, float]:
        """See `BudgetStore.cap_usage`."""
        state = await self.cap_state(cap_key)
        return (0.0, 0.0) if state is None else state[:2]

    async def cap_state(self, cap_key: str) -> tuple[float, float, float | None] | None:
        """(spent, reserved, the cap last asked for) of a cap: the sums over its holders; None: no such cap."""
        fields = await self._call(lambda: self._redis.hgetall(self.cap_key(cap_key)))
        if not fields:
            return None
        spent = reserved = 0.0
        for name, value in fields.items():
            if name.startswith(b"s:"):
                spent += float(value)
            elif name.startswith(b"r:"):
                reserved += float(value)
        cap = fields.get(b"cap")
        return spent, reserved, None if cap is None else float(cap)

    async def tagged(self, kind: str) -> list[str]:
        """The names of every `batchchat:{NAME}:KIND` key in Redis (`procs`: budgets with processes listed;
        `cap`: spending caps)."""
        head, tail = "batchchat:{", "}:" + kind

        try:
            return [raw.decode()[len(head):-len(tail)]
                    async for raw in self._redis.scan_iter(match=f"{head}*{tail}", count=500)]
        except (RedisError, OSError) as exc:
            raise SharedStoreUnavailable(self.url, _reason(exc)) from None

    async def ping(self) -> None:
        """Raise `SharedStoreUnavailable` unless Redis answers (a check before a run starts)."""
        await self._call(lambda: self._redis.ping())

    async def close(self) -> None:
        """Close the connections."""
        close = getattr(self._redis, "aclose", None) or self._redis.close  # aclose: redis-py 5.0.1 on
        await close()
        await self._pool.disconnect()


def _reason(exc: BaseException) -> str:
    """The cause in a few words (redis-py's messages name host and port, never a password)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
