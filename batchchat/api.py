"""The one face of batchchat, shared by the CLI and library users: run a job (sync or async), check a file,
read results back. Each CLI command maps its flags to one function here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from batchchat.config.load import build_settings
from batchchat.config.settings import RunSettings
from batchchat.report.summary import Summary

if TYPE_CHECKING:
    import httpx

    from batchchat.input.plan import Plan


def settings_for(input: str | Path, output: str | Path | None = None, **options: Any) -> RunSettings:
    """Build `RunSettings` from keyword options named like the CLI flags (`rpm=`, `base_url=`, ...).

    A name that is not an option, or a value of the wrong type, raises `UsageError` naming it.
    """
    return build_settings({"input": str(input), "output": output, **options})


async def arun(
    input: str | Path | RunSettings,
    output: str | Path | None = None,
    *,
    client: httpx.AsyncClient | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> Summary:
    """Run a job inside a running event loop (asyncio) and return its summary.

    `on_result` is called with each output line (as a dict) once it is written; `client` replaces the
    built-in HTTP client (for tests or custom transports). Raises `BatchchatError` (with `.exit_code`).
    """
    from batchchat.online.engine import Engine

    settings = input if isinstance(input, RunSettings) else settings_for(input, output, **options)
    return await Engine(settings, client=client, on_result=on_result).run()


def run(input: str | Path | RunSettings, output: str | Path | None = None, **options: Any) -> Summary:
    """Run a job to the end and return its summary (blocking; starts its own event loop)."""
    return anyio.run(lambda: arun(input, output, **options), backend_options=backend_options())


def validate(input: str | Path, **options: Any) -> Plan:
    """Check a job file without sending anything: the plan (valid and invalid lines, token estimate)."""
    from batchchat.input.plan import open_input, scan

    settings = build_settings({"input": str(input), **options}, environ={})
    with ExitStack() as stack:
        path, display = open_input(settings.input, stack)
        return scan(path, display, settings, set(), set())


def shared_status(url: str | None, *, models: Sequence[str] = (), base_url: str | None = None,
                  api_key_env: str | None = None) -> str:
    """`batchchat status --shared`: each budget in the shared store, its live processes and what each spent in
    the last minute, as text. `models` name budgets of this key (env) and endpoint; others show as a hash."""
    import os

    from batchchat.config.settings import DEFAULT_BASE_URL, SHARED_SCHEMES
    from batchchat.errors import UsageError

    url = url or os.environ.get("BATCHCHAT_SHARED")
    if not url or not url.startswith(SHARED_SCHEMES):
        raise UsageError("status needs --shared redis://HOST:PORT/DB (or BATCHCHAT_SHARED)")
    try:
        from batchchat.pacing.redis_store import namespace, redact_url
        from batchchat.pacing.shared import SharedStoreLost, fleet_status, render_status
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    from batchchat.pacing.redis_store import SharedStoreUnavailable

    key = os.environ.get(api_key_env or "OPENAI_API_KEY", "")
    base = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    labels = {namespace(key, base, model): model for model in models}
    try:
        budgets = anyio.run(lambda: fleet_status(url, labels), backend_options=backend_options())
    except SharedStoreUnavailable as exc:
        raise SharedStoreLost(str(exc)) from None
    return render_status(redact_url(url), budgets)


def backend_options() -> dict[str, Any]:
    """anyio's options for the asyncio backend: uvloop where it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
