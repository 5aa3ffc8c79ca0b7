"""`BatchConfig`: the knobs of the simulator's Batch API (`/v1/files`, `/v1/batches`).

Kept apart from `batch.py` and free of heavy imports, because `SimulatorConfig` (and so
`batchchat --help`) imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

__all__ = ["REQUEST_FAULTS", "BatchConfig", "batch_args", "parse_enqueued_limits"]

REQUEST_FAULTS = ("ok", "500", "drop", "lost")


@dataclass(frozen=True)
class BatchConfig:
    """How simulated batches behave. Times are simulator-clock seconds.

    Timeline of a batch: `validating` for `validate_seconds`; then `in_progress`, its lines done
    in file order at `lines_per_second`; then `finalizing` for `finalize_seconds`; then
    `completed`. `window_seconds` is the scaled length of the "24h" completion window: a batch
    whose lines are not all done `window_seconds` after creation is `expired` (done lines kept).
    A cancel shows `cancelling` for `cancel_seconds`, then `cancelled`.

    Failures: `failure_rate` of the lines (a seeded draw per batch and line) and every line when
    `fail_all` get a 500 in the error file. Limits: at most `max_requests_per_file` lines (and
    `max_embedding_inputs` embedding inputs) per batch, `max_file_bytes` per uploaded file;
    `enqueued_tokens` is the per-model limit of prompt tokens in open batches (validating,
    in_progress, finalizing), `model_enqueued_tokens` overrides it per model (None = no limit).
    `upload_rpm` / `create_rpm` rate-limit `POST /v1/files` / `POST /v1/batches` (429 + retry-after).
    `upload_faults` / `create_faults` decide the fate of the n-th upload / creation (`REQUEST_FAULTS`):
    "ok"; "500" (not done, a 500); "drop" (not done, connection closed); "lost" (done, then the
    connection closed before the reply: the client cannot know, a crash test's favourite).
    """

    window_seconds: float = 60.0
    validate_seconds: float = 0.5
    lines_per_second: float = 1000.0
    finalize_seconds: float = 0.5
    cancel_seconds: float = 0.5
    failure_rate: float = 0.0
    fail_all: bool = False
    enqueued_tokens: int | None = None
    model_enqueued_tokens: Mapping[str, int] = field(default_factory=dict)
    max_requests_per_file: int = 50_000
    max_file_bytes: int = 200_000_000
    max_embedding_inputs: int = 50_000
    upload_rpm: int | None = None
    create_rpm: int | None = None
    upload_faults: tuple[str, ...] = ()
    create_faults: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.window_seconds <= 0 or self.lines_per_second <= 0:
            raise ValueError("batch window_seconds and lines_per_second must be > 0")
        for name in ("validate_seconds", "finalize_seconds", "cancel_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"batch {name} must be >= 0")
        if not 0 <= self.failure_rate <= 1:
            raise ValueError(f"batch failure_rate must be in [0, 1], got {self.failure_rate!r}")
        for name in ("max_requests_per_file", "max_file_bytes", "max_embedding_inputs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"batch {name} must be a positive integer, got {value!r}")
        for name in ("enqueued_tokens", "upload_rpm", "create_rpm"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"batch {name} must be a positive integer or None, got {value!r}")
        for model, limit in self.model_enqueued_tokens.items():
            if not isinstance(limit, int) or limit < 1:
                raise ValueError(f"batch enqueued-token limit for {model!r} must be a positive integer")
        object.__setattr__(self, "model_enqueued_tokens", dict(self.model_enqueued_tokens))
        for name in ("upload_faults", "create_faults"):
            kinds = tuple(getattr(self, name))
            unknown = [k for k in kinds if k not in REQUEST_FAULTS]
            if unknown:
                raise ValueError(f"batch {name}: unknown kind {unknown[0]!r}; known: {', '.join(REQUEST_FAULTS)}")
            object.__setattr__(self, name, kinds)

    def enqueued_limit(self, model: str) -> int | None:
        """The enqueued prompt-token limit for `model` (None = unlimited)."""
        return self.model_enqueued_tokens.get(model, self.enqueued_tokens)


_FLAGS = {
    "window_seconds": "--batch-window-seconds",
    "validate_seconds": "--batch-validate-seconds",
    "lines_per_second": "--batch-lines-per-second",
    "finalize_seconds": "--batch-finalize-seconds",
    "cancel_seconds": "--batch-cancel-seconds",
    "failure_rate": "--batch-failure-rate",
    "enqueued_tokens": "--batch-enqueued-tokens",
    "max_requests_per_file": "--batch-max-requests",
    "max_file_bytes": "--batch-max-file-bytes",
    "max_embedding_inputs": "--batch-max-embedding-inputs",
    "upload_rpm": "--batch-upload-rpm",
    "create_rpm": "--batch-create-rpm",
}


def batch_args(config: BatchConfig) -> list[str]:
    """The `batchchat serve` flags that rebuild `config` (only those that differ from the defaults)."""
    default = BatchConfig()
    args: list[str] = []
    for f in fields(BatchConfig):
        value = getattr(config, f.name)
        if value == getattr(default, f.name):
            continue
        if f.name == "fail_all":
            args.append("--batch-fail-all")
        elif f.name in ("upload_faults", "create_faults"):
            args += [f"--batch-{f.name.replace('_', '-')}", ",".join(value)]
        elif f.name == "model_enqueued_tokens":
            for model, limit in value.items():
                args += ["--batch-model-enqueued-tokens", f"{model}={limit}"]
        elif value is not None:
            args += [_FLAGS[f.name], repr(value) if isinstance(value, float) else str(value)]
    return args


def parse_enqueued_limits(specs: list[str]) -> dict[str, int]:
    """`["gpt-4o=90000"]` -> `{"gpt-4o": 90000}` (ValueError on a malformed spec)."""
    limits: dict[str, int] = {}
    for spec in specs:
        model, sep, value = spec.rpartition("=")
        if not sep or not model.strip():
            raise ValueError(f"expected MODEL=TOKENS, got {spec!r}")
        try:
            limits[model.strip()] = int(value)
        except ValueError:
            raise ValueError(f"tokens must be an integer in {spec!r}") from None
    return limits
