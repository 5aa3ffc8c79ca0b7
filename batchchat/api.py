"""The library face: run a job from Python, sync or async, and read results back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from batchchat.config import RunSettings, build_settings
from batchchat.engine import Engine
from batchchat.summary import Summary

if TYPE_CHECKING:
    import httpx


def settings_for(input: str | Path, output: str | Path | None = None, **options: Any) -> RunSettings:
    """Build `RunSettings` from keyword options named like the CLI flags (`rpm=`, `base_url=`, ...)."""
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
    built-in httpx client (for tests or custom transports).
    """
    settings = input if isinstance(input, RunSettings) else settings_for(input, output, **options)
    return await Engine(settings, client=client, on_result=on_result).run()


def run(input: str | Path | RunSettings, output: str | Path | None = None, **options: Any) -> Summary:
    """Run a job to the end and return its summary (blocking; starts its own event loop)."""
    return anyio.run(lambda: arun(input, output, **options), backend_options=backend_options())


def backend_options() -> dict[str, Any]:
    """anyio's options for the asyncio backend: uvloop where it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
