"""The one face of batchchat, shared by the CLI and library users: run a job (sync or async), check a file,
read results back. Each CLI command maps its flags to one function here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from batchchat.config.load import build_settings
from batchchat.config.settings import RunSettings
from batchchat.report.summary import Summary

if TYPE_CHECKING:
    import httpx

    from batchchat.input.plan import Plan
    from batchchat.money.estimate import Estimate


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
    if settings.via == "batch":
        return await abatch(settings, on_result=on_result)
    return await Engine(settings, client=client, on_result=on_result).run()


async def abatch(settings: RunSettings, *, cancel: bool = False,
                 on_result: Callable[[dict[str, Any]], None] | None = None) -> Summary:
    """A run through the provider's Batch API (`--via batch`): split, submit, poll, collect; rerun to resume.

    `cancel=True` cancels the open batches of the run writing `settings.output` and collects what they
    finished (`batchchat cancel OUTPUT`). Raises `BatchchatError` (with `.exit_code`).
    """
    from batchchat.batch.runner import BatchRun

    return await BatchRun(settings, on_result=on_result).run(cancel=cancel)


def run(input: str | Path | RunSettings, output: str | Path | None = None, **options: Any) -> Summary:
    """Run a job to the end and return its summary (blocking; starts its own event loop).

    Called where an event loop is already running (a Jupyter notebook, an async web handler), it runs the
    job on its own loop in a worker thread and blocks until it ends; inside async code, `await arun(...)`
    instead keeps that loop free.
    """
    job = partial(anyio.run, lambda: arun(input, output, **options), backend_options=backend_options())
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop here: the usual case
        return job()
    with ThreadPoolExecutor(1, thread_name_prefix="batchchat-run") as pool:
        return pool.submit(job).result()


def validate(input: str | Path, **options: Any) -> Plan:
    """Check a job file without sending anything: the plan (valid and invalid lines, token estimate)."""
    from batchchat.input.plan import open_input, scan

    settings = build_settings({"input": str(input), **options}, environ={})
    with ExitStack() as stack:
        path, display = open_input(settings.input, stack, settings)
        return scan(path, display, settings)


def estimate(input: str | Path, output: str | Path | None = None, *, prices: str | Path | None = None,
             **options: Any) -> Estimate:
    """What a job will cost, per model and in total, without sending anything (`Estimate.render()` prints it).

    The expected completion is learned from `output` (default: the run's output path) when it holds answers of
    the same job; `prices` is a user price file over the shipped table. Raises `UsageError` for a bad file.
    """
    from batchchat.input.parse import Job, parse_line
    from batchchat.input.plan import open_input
    from batchchat.input.reader import iter_raw_lines
    from batchchat.money.estimate import estimate_jobs, learn_completion_ratio
    from batchchat.money.prices import PriceTable
    from batchchat.pacing.tokens import completion_cap

    settings = build_settings({"input": str(input), "output": output, "prices": prices, **options}, environ={})
    table = PriceTable.load(settings.prices)
    with ExitStack() as stack:
        path, _display = open_input(settings.input, stack, settings)

        def jobs() -> Any:
            for line_no, raw in iter_raw_lines(path):
                item = parse_line(raw, line_no, settings.defaults)
                if isinstance(item, Job):
                    yield item

        learned = None
        previous = None if settings.input == "-" and settings.output is None else settings.output_path()
        if previous is not None and previous.exists():  # a second pass over the input: only (model, cap) per id is kept
            caps = {job.custom_id: (str(job.body.get("model")), completion_cap(job)) for job in jobs()}
            learned = learn_completion_ratio(previous, caps)
        return estimate_jobs(jobs(), table, learned)


def shared_status(url: str | None, *, models: Sequence[str] = (), base_url: str | None = None,
                  api_key_env: str | None = None, cap_names: Sequence[str] = ()) -> str:
    """`batchchat status --shared`: each budget in the shared store, its live processes and what each spent in
    the last minute, then each spending cap with what the fleet spent and holds, as text. `models` and
    `cap_names` name budgets and caps of this key (env) and endpoint; others show as a hash."""
    import os

    from batchchat.config.settings import DEFAULT_BASE_URL, SHARED_SCHEMES
    from batchchat.errors import UsageError

    url = url or os.environ.get("BATCHCHAT_SHARED")
    if not url or not url.startswith(SHARED_SCHEMES):
        raise UsageError("status needs --shared redis://HOST:PORT/DB (or BATCHCHAT_SHARED)")
    try:
        from batchchat.pacing.redis_store import RedisStore, namespace, redact_url
        from batchchat.pacing.shared import SharedStoreLost, fleet_status, render_status
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    from batchchat.pacing.redis_store import SharedStoreUnavailable

    key = os.environ.get(api_key_env or "OPENAI_API_KEY", "")
    base = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    from batchchat.money.fleet_caps import fleet_caps, render_caps
    from batchchat.money.ledger import cap_key

    labels = {namespace(key, base, model): model for model in models}
    cap_labels = {cap_key(key, base, name): name for name in cap_names}

    async def read() -> tuple[Any, Any]:
        store = RedisStore(url)
        try:
            return await fleet_status(store, labels), await fleet_caps(store, cap_labels)
        finally:
            await store.close()

    try:
        budgets, caps = anyio.run(read, backend_options=backend_options())
    except SharedStoreUnavailable as exc:
        raise SharedStoreLost(str(exc)) from None
    return "\n".join(part for part in (render_status(redact_url(url), budgets), render_caps(caps)) if part)


def backend_options() -> dict[str, Any]:
    """anyio's options for the asyncio backend: uvloop where it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
