"""Fault injection: which fault (if any) request number k gets, as a pure function of (seed, k).

Kinds (`FAULT_KINDS`):
- `500`, `502`, `503`: that status with an OpenAI-shaped error body and no Retry-After.
- `503_retry_after`: 503 with `Retry-After: 1`.
- `429`: 429 `rate_limit_exceeded` body without Retry-After; `429_retry_after` adds a 1 s retry
  header in the configured `retry_after_style` (openai: `Retry-After: 1` and `retry-after-ms: 1000`;
  litellm: `llm_provider-retry-after`, the seconds left in the minute; none: nothing).
- `403`: 403 `permission_denied` body.
- `drop`: the connection is closed after the request is read, with no response.
- `hang`: no response ever; the connection is held until the client or the server closes it.
- `truncate`: 200 whose Content-Length announces the full body, but only half is sent, then close.
- `non_json`: 200 with a `text/html` body.
- `echo_headers`: 400 whose error message echoes every request header (Authorization included),
  so a client can prove it redacts keys from what it logs and writes.
- `insufficient_quota`: 429 with OpenAI's out-of-credit body (type and code `insufficient_quota`)
  and no retry header: no retry will help.

`fault_sequence[k]` decides for the first requests ("ok" = no fault); after it, `fault_rates`
apply: a uniform draw u = hash(seed, k) in [0, 1) is matched against the cumulative rates in the
order of `FAULT_KINDS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

__all__ = ["FAULT_KINDS", "FaultPlan"]

FAULT_KINDS: tuple[str, ...] = (
    "500",
    "502",
    "503",
    "503_retry_after",
    "429",
    "429_retry_after",
    "403",
    "drop",
    "hang",
    "truncate",
    "non_json",
    "echo_headers",
    "insufficient_quota",  # appended last: draws follow this order, so earlier seeded plans stay as they were
)


def unit_draw(seed: int, k: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, k)."""
    digest = hashlib.blake2b(b"fault:%d:%d" % (seed, k), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class FaultPlan:
    """Decides the fault of the k-th API request (None = answer normally)."""

    __slots__ = ("_cumulative", "_seed", "_sequence")

    def __init__(self, seed: int, rates: Mapping[str, float], sequence: Sequence[str] = ()) -> None:
        self._seed = seed
        self._sequence = tuple(sequence)
        total = 0.0
        cumulative: list[tuple[float, str]] = []
        for kind in FAULT_KINDS:
            rate = rates.get(kind, 0.0)
            if rate > 0:
                total += rate
                cumulative.append((total, kind))
        self._cumulative = tuple(cumulative)

    def fault_for(self, k: int) -> str | None:
        """The fault kind for request number k (counted from 0), or None."""
        if k < len(self._sequence):
            kind = self._sequence[k]
            return None if kind == "ok" else kind
        if not self._cumulative:
            return None
        u = unit_draw(self._seed, k)
        for bound, kind in self._cumulative:
            if u < bound:
                return kind
        return None
