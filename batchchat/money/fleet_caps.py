"""Watching a fleet's spending caps: `batchchat status --shared` lists each cap in the shared store with what the
fleet spent against it and holds for requests in flight.

A cap is stored under a hash of key, endpoint and cap name (`money.ledger.cap_key`), so it is named only when the
caller names it (`--cap-name`, for the key in the environment and `--base-url`); else by a short hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchchat.money.cost import usd


@dataclass(frozen=True, slots=True)
class CapStatus:
    """One spending cap in the shared store."""

    key: str
    label: str
    cap: float | None  # the cap last asked for (None: not known)
    spent: float
    reserved: float


async def fleet_caps(store: Any, labels: Mapping[str, str]) -> list[CapStatus]:
    """Every spending cap in Redis (`store`: a `RedisStore`; a cap is kept a day after its last use), and every
    cap in `labels` ({key: name})."""
    found = []
    for key in dict.fromkeys([*labels, *await store.tagged("cap")]):
        state = await store.cap_state(key)
        if state is None and key not in labels:
            continue
        spent, reserved, cap = state or (0.0, 0.0, None)
        found.append(CapStatus(key, labels.get(key, f"cap {key[:12]}"), cap, spent, reserved))
    return found


def render_caps(caps: list[CapStatus]) -> str:
    """The caps as text, a line each ("" when there are none)."""
    lines = []
    for c in caps:
        of = f" of {usd(c.cap)} ({100 * (c.spent + c.reserved) / c.cap:.1f}% used or held)" if c.cap else ""
        lines.append(f"spending cap {c.label}: {usd(c.spent)} spent{of}, {usd(c.reserved)} held for requests in "
                     "flight")
    return "\n".join(lines)
