"""Build `RunSettings` from flags, the environment and a TOML config file, checking every value's type.

Precedence: flag > environment (`OPENAI_API_KEY` or the variable named by `--api-key-env`, `OPENAI_BASE_URL`,
`BATCHCHAT_SHARED`) > config file (TOML, `--config`) > default. A key the file or a library caller gives that is
not an option is an error that names it; so is a value of the wrong type (`rpm = "fast"`).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from batchchat.config.settings import (
    DEFAULT_BASE_URL,
    BatchOptions,
    EndpointConfig,
    JobDefaults,
    RetryPolicy,
    RunSettings,
    TableOptions,
)
from batchchat.errors import UsageError
from batchchat.input.shard import Shard
from batchchat.secrets import Secret


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a number")
    return float(value)


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("a whole number")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a string")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _model_limits(value: Any) -> tuple[tuple[str, float | None, float | None], ...]:
    """`MODEL=RPM,TPM` entries (either number may be left empty: `gpt-4o=,150000`) as (model, rpm, tpm)."""
    limits = []
    for entry in _texts(value):
        model, sep, numbers = entry.partition("=")
        rpm, comma, tpm = numbers.partition(",")
        try:
            parsed = tuple(float(v) if v.strip() else None for v in (rpm, tpm))
        except ValueError:
            parsed = (None, None)
        if not sep or not comma or not model.strip() or parsed == (None, None) or any(
                v is not None and v <= 0 for v in parsed):
            raise TypeError("MODEL=RPM,TPM entries of positive numbers, one may be empty (gpt-4o-mini=500,200000)")
        limits.append((model.strip(), parsed[0], parsed[1]))
    return tuple(limits)


def _texts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError("a list of strings")
    return tuple(value)


def _shard(value: Any) -> Shard:
    if isinstance(value, Shard):
        return value
    if not isinstance(value, str):
        raise TypeError("K/N as a string (for example \"0/4\")")
    return Shard.parse(value)


def _path(value: Any) -> Path:
    if not isinstance(value, str | Path):
        raise TypeError("a path (a string)")
    return Path(value)


def _usd(value: Any) -> float:
    from batchchat.money.cap import parse_max_cost

    try:
        return parse_max_cost(value)
    except UsageError:
        raise TypeError("an amount in USD more than zero, such as 5 or 0.25") from None


# Every option a run takes, named like the long flag (dashes as underscores), and the type of its value.
OPTIONS: dict[str, Callable[[Any], Any]] = {
    "output": _path,
    "base_url": _text,
    "api_key_env": _text,
    "azure_api_version": _text,
    "header": _texts,
    "timeout": _number,
    "connect_timeout": _number,
    "transport": _text,
    "rpm": _number,
    "tpm": _number,
    "model_limit": _model_limits,
    "concurrency": _whole,
    "max_attempts": _whole,
    "deadline": _number,
    "backoff_base": _number,
    "backoff_max": _number,
    "max_wait": _number,
    "adapt": _text,
    "grace": _number,
    "model": _text,
    "system": _text,
    "max_tokens": _whole,
    "temperature": _number,
    "endpoint": _text,
    "strict": _flag,
    "progress": _text,
    "log_interval": _number,
    "summary_json": _path,
    "resend_changed": _flag,
    "limit": _whole,
    "via": _text,
    "batch_max_requests": _whole,
    "batch_max_bytes": _whole,
    "poll_interval": _number,
    "no_wait": _flag,
    "fallback": _text,
    "prices": _path,
    "max_cost": _usd,
    "shared": _text,
    "shared_timeout": _number,
    "shared_fallback": _text,
    "cap_name": _text,
    "shard": _shard,
    # issue #24: tables in, the request cache
    "input_format": _text,
    "template": _text,
    "system_template": _text,
    "id_column": _text,
    "cache": _path,
}
# Options a library caller may also give (not from a config file).
CALLER_ONLY: dict[str, Callable[[Any], Any]] = {"api_key": _text, "handle_signals": _flag}


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file whose keys are the long flag names (`rpm`, `base-url`, ...), each type-checked."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        values[name] = _checked(name, value, OPTIONS, f"{path}: {key}")
    return values


def check_options(options: Mapping[str, Any], where: str = "option") -> dict[str, Any]:
    """Type-check options given by a library caller (None meaning not given); unknown names are errors."""
    known = OPTIONS | CALLER_ONLY
    return {name: None if value is None else _checked(name, value, known, f"{where} {name}")
            for name, value in options.items()}


def _checked(name: str, value: Any, known: Mapping[str, Callable[[Any], Any]], where: str) -> Any:
    convert = known.get(name)
    if convert is None:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" (did you mean {close[0].replace('_', '-')}?)" if close else ""
        raise UsageError(f"{where}: unknown option{hint}")
    try:
        return convert(value)
    except TypeError as exc:
        raise UsageError(f"{where}: must be {exc}, got {value!r}") from None


def build_settings(
    options: Mapping[str, Any], environ: Mapping[str, str] | None = None, config_file: Path | None = None
) -> RunSettings:
    """Merge flags (`options`: `input` plus option names, None meaning not given), environment, config file
    and defaults."""
    environ = os.environ if environ is None else environ
    given = dict(options)
    input_spec = given.pop("input")
    flags = check_options(given)
    file_values = load_config_file(config_file) if config_file else {}

    def pick(name: str, default: Any = None) -> Any:
        value = flags.get(name)
        if value is not None:
            return value
        return file_values.get(name, default)

    key_env = pick("api_key_env", "OPENAI_API_KEY")
    key = flags.get("api_key") or environ.get(key_env) or None
    base_url = flags.get("base_url") or environ.get("OPENAI_BASE_URL") or file_values.get("base_url",
                                                                                           DEFAULT_BASE_URL)
    endpoint = EndpointConfig(
        base_url=base_url,
        api_key=Secret(key) if key else None,
        api_key_env=key_env,
        azure_api_version=pick("azure_api_version"),
        extra_headers=tuple(_header(h) for h in (pick("header") or ())),
        connect_timeout=pick("connect_timeout", 10.0),
        read_timeout=pick("timeout", 600.0),
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
        max_attempts=pick("max_attempts", 5),
        deadline=pick("deadline", 900.0),
        backoff_base=pick("backoff_base", 0.5),
        backoff_max=pick("backoff_max", 8.0),
        max_wait=pick("max_wait", 60.0),
    )
    settings = RunSettings(
        input=str(input_spec),
        output=pick("output"),
        endpoint=endpoint,
        defaults=defaults,
        rpm=pick("rpm"),
        tpm=pick("tpm"),
        model_limits=pick("model_limit", ()),
        concurrency=pick("concurrency", 64),
        retry=retry,
        grace=pick("grace", 30.0),
        strict=bool(pick("strict", False)),
        adapt=pick("adapt", "auto"),
        progress=pick("progress", "auto"),
        log_interval=pick("log_interval"),
        summary_json=pick("summary_json"),
        handle_signals=bool(flags.get("handle_signals", False)),
        resend_changed=bool(pick("resend_changed", False)),
        limit=pick("limit"),
        via=pick("via", "online"),
        batch=_batch_options(pick),
        prices=pick("prices"),
        max_cost=pick("max_cost"),
        shared=flags.get("shared") or environ.get("BATCHCHAT_SHARED") or file_values.get("shared"),
        shared_timeout=pick("shared_timeout", 60.0),
        shared_fallback=pick("shared_fallback", "stop"),
        cap_name=pick("cap_name"),
        shard=pick("shard"),
        table=TableOptions(format=pick("input_format"), template=pick("template"),
                           system_template=pick("system_template"), id_column=pick("id_column")),
        cache=pick("cache"),
    )
    settings.check()
    return settings


def _batch_options(pick: Callable[..., Any]) -> BatchOptions:
    poll = pick("poll_interval", 30.0)
    return BatchOptions(
        max_requests=pick("batch_max_requests", 50_000),
        max_bytes=pick("batch_max_bytes", 200_000_000),
        poll_interval=poll,
        poll_max=max(poll, 300.0) if poll >= 30.0 else min(300.0, poll * 4),
        no_wait=bool(pick("no_wait", False)),
        fallback=pick("fallback", "resubmit"),
    )


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
