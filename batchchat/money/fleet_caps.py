"""Watching a fleet's spending caps: `batchchat status --shared` lists each cap in the shared store with what the
fleet spent against it and holds for requests in flight.

A cap is stored under a hash of key, endpoint and cap name (`money.ledger.cap_key`), so it is named only when the
caller names it (`--cap-name`, for the key in the environment and `--base-url`); else by a short hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from batchchat.money.cost import usd


@dataclass(frozen=True, slots=True)
class CapStatus:
    """One spending cap in the shared store."""

    key: str
    label: str
    cap: float | None  # the cap last asked for (None: not known)
    spent: float
    reserved: float


async def fleet_caps(url: str, labels: Mapping[str, str]) -> list[CapStatus]:
    """Every spending cap in Redis (kept a day after its last use), and every cap in `labels` ({key: name})."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from batchchat.pacing.redis_store import SharedStoreUnavailable, cap_figures, redact_url

    client = aioredis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        found = []
        try:
            names = [raw.decode() async for raw in client.scan_iter(match="batchchat:{*}:cap", count=500)]
            keys = dict.fromkeys([*labels, *(name[len("batchchat:{"):-len("}:cap")] for name in names)])
            for key in keys:
                fields = await client.hgetall(f"batchchat:{{{key}}}:cap")
                if not fields and key not in labels:
                    continue
                spent, reserved, cap = cap_figures(fields)
                found.append(CapStatus(key, labels.get(key, f"cap {key[:12]}"), cap, spent, reserved))
        except (RedisError, OSError) as exc:
            raise SharedStoreUnavailable(redact_url(url), str(exc).splitlines()[0][:200]) from None
        return found
    finally:
        close = getattr(client, "aclose", None) or client.close
        await close()


def render_caps(caps: list[CapStatus]) -> str:
    """The caps as text, a line each ("" when there are none)."""
    lines = []
    for c in caps:
        of = f" of {usd(c.cap)} ({100 * (c.spent + c.reserved) / c.cap:.1f}% used or held)" if c.cap else ""
        lines.append(f"spending cap {c.label}: {usd(c.spent)} spent{of}, {usd(c.reserved)} held for requests in "
                     "flight")
    return "\n".join(lines)
