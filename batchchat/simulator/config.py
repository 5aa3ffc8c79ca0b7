"""`SimulatorConfig`: every knob of the simulator in one frozen value object."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from batchchat.simulator.batch_config import BatchConfig
from batchchat.simulator.faults import FAULT_KINDS

__all__ = ["SimulatorConfig"]


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulator behaves: limits, latency, faults, saturation, where it listens.

    Limits: `rpm`/`tpm` per API key (None = unlimited), enforced as token buckets holding
    `limit_window` seconds' worth of the per-minute limit. Latency (ms): base `latency_ms`
    (uniform in [latency_ms, latency_max_ms] when the latter is set) + `ms_per_token` per
    completion token, times 1 ± `jitter`. Faults: `fault_rates` {kind: probability} and an
    exact `fault_sequence` for the first requests. Saturation: beyond `capacity` requests in
    flight latency grows xin_flight/capacity; beyond `overload_at` requests get 503 at once.
    `clock` (seconds, monotonic) drives the limiter and the stats series; tests inject a fake one.
    """

    rpm: int | None = None
    tpm: int | None = None
    limit_window: float = 1.0
    rate_limit_headers: bool = True
    api_key: str | None = None
    seed: int = 0
    latency_ms: float = 0.0
    latency_max_ms: float | None = None
    ms_per_token: float = 0.0
    jitter: float = 0.0
    fault_rates: Mapping[str, float] = field(default_factory=dict)
    fault_sequence: Sequence[str] = ()
    capacity: int | None = None
    overload_at: int | None = None
    host: str = "127.0.0.1"
    port: int = 0
    default_max_tokens: int = 256
    answer_tokens: int = 64
    embedding_dims: int = 8
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    batch: BatchConfig = field(default_factory=BatchConfig)

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "capacity", "overload_at"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if self.limit_window <= 0:
            raise ValueError("limit_window must be > 0 seconds")
        if self.latency_ms < 0 or self.ms_per_token < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("latency_ms and ms_per_token must be >= 0 and jitter in [0, 1]")
        if self.latency_max_ms is not None and self.latency_max_ms < self.latency_ms:
            raise ValueError("latency_max_ms must be >= latency_ms")
        for name in ("default_max_tokens", "answer_tokens", "embedding_dims"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for kind, rate in self.fault_rates.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
            if not 0 <= rate <= 1:
                raise ValueError(f"fault rate for {kind!r} must be in [0, 1], got {rate!r}")
        if sum(self.fault_rates.values()) > 1 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        for kind in self.fault_sequence:
            if kind != "ok" and kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r} in fault_sequence")
        object.__setattr__(self, "fault_rates", dict(self.fault_rates))
        object.__setattr__(self, "fault_sequence", tuple(self.fault_sequence))
