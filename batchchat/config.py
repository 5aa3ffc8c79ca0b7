"""One frozen settings object for a run, and how it is built from flags, environment and a config file.

Precedence: flag > environment (`OPENAI_API_KEY` or the variable named by `--api-key-env`, `OPENAI_BASE_URL`)
> config file (TOML, `--config`) > default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from batchchat.errors import UsageError
from batchchat.jobs import ENDPOINTS, JobDefaults
from batchchat.retry import RetryPolicy
from batchchat.secrets import Secret
from batchchat.transport import EndpointConfig

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PROGRESS_MODES = ("auto", "bar", "log", "off")
ADAPT_MODES = ("auto", "on", "off")


@dataclass(frozen=True, slots=True)
class RunSettings:
    """Everything a run needs to know; built once, never changed."""

    input: str  # a path, or "-" for standard input
    output: Path | None = None  # default: beside the input, NAME.results.jsonl
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    defaults: JobDefaults = field(default_factory=JobDefaults)
    rpm: float | None = None
    tpm: float | None = None
    concurrency: int = 64
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    grace: float = 30.0  # seconds in-flight requests get to finish after Ctrl-C / SIGTERM
    strict: bool = False  # any invalid line stops the run before anything is sent
    progress: str = "auto"
    log_interval: float | None = None
    summary_json: Path | None = None
    adapt: str = "auto"  # auto: learn limits from headers, adapt concurrency without them; on; off
    burst_seconds: float = 0.5  # half of a one-second server window: room for arrival jitter
    handle_signals: bool = False

    def output_path(self) -> Path:
        """Where results go."""
        if self.output is not None:
            return self.output
        if self.input == "-":
            return Path("stdin.results.jsonl")
        path = Path(self.input)
        stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
        return path.with_name(stem + ".results.jsonl")

    def check(self) -> None:
        """Raise `UsageError` for values no run can work with."""
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1, got {self.concurrency}")
        for name, value in (("--rpm", self.rpm), ("--tpm", self.tpm)):
            if value is not None and value <= 0:
                raise UsageError(f"{name} must be a positive number, got {value:g} (leave it out for no limit)")
        if self.retry.max_attempts < 1:
            raise UsageError(f"--max-attempts must be at least 1, got {self.retry.max_attempts}")
        if self.retry.deadline <= 0:
            raise UsageError(f"--deadline must be positive, got {self.retry.deadline:g}")
        if self.grace < 0:
            raise UsageError(f"--grace must be 0 or more, got {self.grace:g}")
        if self.endpoint.read_timeout <= 0 or self.endpoint.connect_timeout <= 0:
            raise UsageError("--timeout and --connect-timeout must be positive")
        if self.adapt not in ADAPT_MODES:
            raise UsageError(f"--adapt must be one of {', '.join(ADAPT_MODES)}, got {self.adapt!r}")
        if self.progress not in PROGRESS_MODES:
            raise UsageError(f"--progress must be one of {', '.join(PROGRESS_MODES)}, got {self.progress!r}")
        if self.defaults.endpoint is not None and self.defaults.endpoint not in ENDPOINTS:
            raise UsageError(f"--endpoint must be one of {', '.join(ENDPOINTS)}, got {self.defaults.endpoint!r}")
        if self.defaults.max_tokens is not None and self.defaults.max_tokens < 1:
            raise UsageError(f"--max-tokens must be at least 1, got {self.defaults.max_tokens}")
        if not self.endpoint.base_url.startswith(("http://", "https://")):
            raise UsageError(f"--base-url must start with http:// or https://, got {self.endpoint.base_url!r}")


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file whose keys are the long flag names (`rpm`, `base-url`, ...)."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    return {key.replace("-", "_"): value for key, value in data.items()}


def build_settings(
    options: Mapping[str, Any], environ: Mapping[str, str] | None = None, config_file: Path | None = None
) -> RunSettings:
    """Merge flags (`options`, None meaning not given), environment, config file and defaults."""
    environ = os.environ if environ is None else environ
    file_values = load_config_file(config_file) if config_file else {}

    def pick(name: str, default: Any = None) -> Any:
        value = options.get(name)
        if value is not None:
            return value
        return file_values.get(name, default)

    key_env = pick("api_key_env", "OPENAI_API_KEY")
    key = options.get("api_key") or environ.get(key_env) or None
    base_url = options.get("base_url") or environ.get("OPENAI_BASE_URL") or file_values.get(
        "base_url", DEFAULT_BASE_URL
    )
    headers = tuple(_header(h) for h in (pick("header") or ()))
    endpoint = EndpointConfig(
        base_url=base_url,
        api_key=Secret(key) if key else None,
        api_key_env=key_env,
        azure_api_version=pick("azure_api_version"),
        extra_headers=headers,
        connect_timeout=float(pick("connect_timeout", 10.0)),
        read_timeout=float(pick("timeout", 600.0)),
        transport=pick("transport", "aiohttp"),
    )
    defaults = JobDefaults(
        model=pick("model"),
        system=pick("system"),
        max_tokens=pick("max_tokens"),
        temperature=pick("temperature"),
        endpoint=pick("endpoint"),
    )
    retry = RetryPolicy(
        max_attempts=int(pick("max_attempts", 5)),
        deadline=float(pick("deadline", 900.0)),
        backoff_base=float(pick("backoff_base", 0.5)),
        backoff_max=float(pick("backoff_max", 8.0)),
        max_wait=float(pick("max_wait", 60.0)),
    )
    output = pick("output")
    summary_json = pick("summary_json")
    settings = RunSettings(
        input=str(options["input"]),
        output=Path(output) if output else None,
        endpoint=endpoint,
        defaults=defaults,
        rpm=pick("rpm"),
        tpm=pick("tpm"),
        concurrency=int(pick("concurrency", 64)),
        retry=retry,
        grace=float(pick("grace", 30.0)),
        strict=bool(pick("strict", False)),
        adapt=pick("adapt", "auto"),
        progress=pick("progress", "auto"),
        log_interval=pick("log_interval"),
        summary_json=Path(summary_json) if summary_json else None,
        handle_signals=bool(options.get("handle_signals", False)),
    )
    settings.check()
    return settings


def with_options(settings: RunSettings, **changes: Any) -> RunSettings:
    """A copy of `settings` with some fields changed (and checked)."""
    known = {f.name for f in fields(RunSettings)}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    result = replace(settings, **changes)
    result.check()
    return result


def _header(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"--header must look like 'Name: value', got {value!r}")
    return name.strip(), rest.strip()
