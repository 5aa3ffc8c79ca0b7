"""The online path's hooks into a fleet's shared budget store (`--shared`): opening it, what each process
publishes of itself, and turning a lost store into a stop (exit 8)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from batchchat.config.settings import RunSettings
from batchchat.errors import ExitCode, UsageError
from batchchat.online.stop import StopControl


def open_shared(settings: RunSettings, echo: Callable[[str], None]) -> Any:
    """The shared budget store of --shared (Redis, with the outage policy of pacing/shared.py)."""
    try:
        from batchchat.pacing.shared import open_shared
    except ImportError as exc:  # the redis extra is not installed
        raise UsageError(f"--shared: {exc}") from None
    return open_shared(settings, echo)


def stop_on_lost(shared: Any, control: StopControl,
                  work: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """`work` where the shared budget store lost past --shared-timeout stops the run (exit 8) instead of failing
    the task group: in-flight requests get the grace period, as for any stop."""
    if shared is None:
        return work

    async def guarded(*args: Any) -> None:
        from batchchat.pacing.shared import SharedStoreLost

        try:
            await work(*args)
        except* SharedStoreLost as lost:  # a group when it comes from a task group inside `work`
            control.fail(ExitCode.SHARED_STORE_LOST, str(lost.exceptions[0]))

    return guarded


def shared_ledger(settings: RunSettings, shared: Any, path: Path, display: str) -> Any:
    """With --max-cost and --shared: the fleet's spending cap (`money.ledger.SharedLedger`); else None (a run's
    cap is its own). Named by --cap-name, or by the input file (`display` stands for its name)."""
    if shared is None or settings.max_cost is None:
        return None
    from batchchat.money.ledger import SharedLedger, cap_key, default_cap_name

    name = settings.cap_name or default_cap_name(path, display)
    api_key = settings.endpoint.api_key
    key = cap_key(api_key.reveal() if api_key else None, settings.endpoint.base_url, name)
    return SharedLedger(shared, key, name, settings.max_cost)


def process_info(settings: RunSettings) -> dict[str, str | int | float]:
    """What `batchchat status --shared` shows of this process (never a key or a model name)."""
    import os
    import socket
    import time

    return {"host": socket.gethostname(), "pid": os.getpid(), "output": settings.output_path().name,
            "shard": str(settings.shard) if settings.shard else "-", "started": round(time.time())}
