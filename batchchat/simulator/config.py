"""`SimulatorConfig`: every knob of the simulator in one frozen value object."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from batchchat.simulator.batch_config import BatchConfig
from batchchat.simulator.faults import FAULT_KINDS
from batchchat.simulator.limits import HEADER_MODES, LIMIT_KINDS
from batchchat.simulator.models import ANY_MODEL, DEFAULT_MODELS

__all__ = ["RETRY_AFTER_STYLES", "SimulatorConfig"]

RETRY_AFTER_STYLES: tuple[str, ...] = ("openai", "litellm", "none")
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulator behaves: limits, latency, faults, saturation, where it listens.

    Limits: `rpm`/`tpm` per (API key, model) (None = unlimited); `model_limits` {model: (rpm, tpm)}
    replaces them for the models it names. `limit_kind` (see `limits.LIMIT_KINDS`): "bucket" holds
    `limit_window` seconds' worth of the per-minute limit, "strict" a second's worth per whole
    second, "minute" a calendar-minute counter (LiteLLM). `limit_headers` (`limits.HEADER_MODES`): what the
    x-ratelimit-* headers describe: "minute" (OpenAI's shape) a per-minute bucket refilled continuously while
    admission is per second, "admission" the admitting counter itself. `retry_after_style` of 429s: "openai"
    (retry-after + retry-after-ms), "litellm" (llm_provider-retry-after: seconds to the minute's
    end) or "none"; `request_id_header` names the request id header. `models`: the names served
    (plus those of `model_limits`; "*" = any name; others get 404 model_not_found). `workers`: at
    most this many requests served at once, the rest wait in FIFO order (None = no queue).
    Latency (ms): base `latency_ms` (uniform in [latency_ms, latency_max_ms] when the latter is
    set) + `ms_per_token` per completion token, times 1 ± `jitter`. Faults: `fault_rates` {kind: probability} and an
    exact `fault_sequence` for the first requests. Saturation: beyond `capacity` requests in
    flight latency grows xin_flight/capacity; beyond `overload_at` requests get 503 at once.
    `clock` (seconds, monotonic) drives the limiter and the stats series; tests inject a fake one.
    """

    rpm: int | None = None
    tpm: int | None = None
    limit_window: float = 1.0
    rate_limit_headers: bool = True
    model_limits: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)
    limit_kind: str = "bucket"
    limit_headers: str = "minute"
    retry_after_style: str = "openai"
    request_id_header: str = "x-request-id"
    models: Sequence[str] = DEFAULT_MODELS
    workers: int | None = None
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
        self._check_models()
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

    def _check_models(self) -> None:
        """Validate and normalise the per-model, limiter-style and queueing fields."""
        _check_limit("workers", self.workers)
        limits: dict[str, tuple[int | None, int | None]] = {}
        for model, pair in self.model_limits.items():
            if not isinstance(model, str) or not model or model == ANY_MODEL:
                raise ValueError(f"model_limits needs model names, got {model!r}")
            rpm, tpm = pair
            _check_limit(f"rpm of {model}", rpm)
            _check_limit(f"tpm of {model}", tpm)
            limits[model] = (rpm, tpm)
        object.__setattr__(self, "model_limits", limits)
        if self.limit_kind not in LIMIT_KINDS:
            raise ValueError(f"limit_kind must be one of {', '.join(LIMIT_KINDS)}, got {self.limit_kind!r}")
        if self.limit_headers not in HEADER_MODES:
            raise ValueError(f"limit_headers must be one of {', '.join(HEADER_MODES)}, got {self.limit_headers!r}")
        if self.retry_after_style not in RETRY_AFTER_STYLES:
            styles = ", ".join(RETRY_AFTER_STYLES)
            raise ValueError(f"retry_after_style must be one of {styles}, got {self.retry_after_style!r}")
        name = self.request_id_header
        if not name or not set(name) <= _TOKEN_CHARS:
            raise ValueError(f"request_id_header must be an HTTP header name, got {name!r}")
        models = (self.models,) if isinstance(self.models, str) else tuple(self.models)
        if not models:
            raise ValueError("models must name at least one model (or '*' for any)")
        for model in models:
            if not isinstance(model, str) or not model.strip() or "," in model:
                raise ValueError(f"model names must be non-empty and without commas, got {model!r}")
        object.__setattr__(self, "models", models)


def _check_limit(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
