"""Before and after a run's requests: where requests go, the start line, opening the output, checking the
plan, the summary's JSON, and compaction off the event loop."""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from batchchat.config.settings import RunSettings
from batchchat.errors import OutputWriteError, UsageError
from batchchat.input.plan import Plan, describe_invalid, scan, sealed_plan
from batchchat.online.stop import StopControl
from batchchat.output.compact import compact
from batchchat.output.lock import RunLock
from batchchat.output.paths import check_output
from batchchat.output.resume import ResumeIndex, load_resume_index
from batchchat.output.seal import make_seal, seal_key, sealed_lines
from batchchat.output.stream import is_stdout
from batchchat.report.counters import Counters
from batchchat.report.status import read_seal
from batchchat.report.summary import Summary

if TYPE_CHECKING:
    pass



def first_url(path: Path, settings: RunSettings) -> str:
    """The URL of the input's first valid request (the start line names it before anything is sent)."""
    from batchchat.input.parse import Job, read_jobs

    for item in read_jobs(path, settings.defaults):
        if isinstance(item, Job):
            return settings.endpoint.url_for(item.url)
    return settings.endpoint.url_for(settings.defaults.endpoint or "/v1/chat/completions")


def start_line(s: RunSettings, plan: Plan, output: Path, url: str) -> str:
    """The first line of a log: what runs, where to, and within which limits."""
    done = f" ({plan.skipped:,} already done)" if plan.skipped else ""
    limits = ", ".join(f"{name} {value:g}" for name, value in (("rpm", s.rpm), ("tpm", s.tpm)) if value)
    return (f"run {plan.display} -> {'standard output' if is_stdout(output) else output}: "
            f"{plan.to_run:,} requests to send{done}, to {url}; "
            f"{limits or 'no rpm/tpm limit'}, concurrency {s.concurrency}, adapt {s.adapt}")


def no_key_warning(settings: RunSettings) -> str:
    """What a run without an API key says at its start (a warning: local servers need none)."""
    return (f"batchchat: warning: {settings.endpoint.api_key_env} is not set: requests go without an API key "
            "(fine for a local server that needs none)")


def open_output(output: Path, input_path: Path | None, stack: ExitStack, echo: Callable[[str], None],
                sealed: Callable[[], tuple[int, str] | None] | None = None) -> ResumeIndex | tuple[int, str]:
    """Check and lock the output (the lock released by `stack`) and read what it holds; `-`: nothing to do.
    When `sealed()` finds the job finished (`output.seal`), its (lines, input digest), and nothing is read."""
    if is_stdout(output):  # streamed: nothing to lock, nothing to resume from
        return ResumeIndex()
    check_output(output, input_path)
    lock = RunLock(output)
    lock.acquire()
    stack.callback(lock.release)
    if sealed is not None and (found := sealed()) is not None:
        return found
    index = load_resume_index(output)
    if index.repair:
        echo(f"batchchat: {index.repair}")
    return index


def plan_run(path: Path, display: str, settings: RunSettings, output: Path, stack: ExitStack,
             echo: Callable[[str], None]) -> Plan:
    """Lock the output and plan the run: from its seal when the job is finished and unchanged since
    (`output.seal`: nothing read), else from what the output holds and a scan of the whole input."""
    key = seal_key(settings.defaults, settings.shard)
    found = open_output(output, None if settings.input == "-" else path, stack, echo,
                        lambda: sealed_lines(read_seal(output), output, path, key))
    if isinstance(found, tuple):
        return sealed_plan(path, display, *found)
    return scan(path, display, settings, found, resend_changed=settings.resend_changed, limit=settings.limit)


def finished_seal(settings: RunSettings, c: Counters, plan: Plan, output: Path, exit_code: int) -> dict | None:
    """The seal of an output a run left holding every line of its input done (`output.seal`), or None."""
    if exit_code != 0 or c.failed or c.left or c.done < c.total or plan.input_sha256 is None or is_stdout(output):
        return None
    return make_seal(output, plan.input_sha256, seal_key(settings.defaults, settings.shard), c.skipped + c.done)


def open_run_cache(settings: RunSettings, stack: ExitStack, warn: Callable[[str], None]) -> Any:
    """With `--cache`, the run's `cache.hook.RunCache` (closed by `stack`; SQLite imported only then), else None."""
    if settings.cache is None:
        return None
    from batchchat.cache.hook import RunCache

    cache = RunCache(settings.cache, settings.endpoint, warn)
    stack.callback(cache.close)
    return cache


def check_plan(plan: Plan, strict: bool, echo: Callable[[str], None]) -> None:
    """Refuse a plan with invalid lines under `--strict` or with no valid line at all; else say what is bad."""
    # lines already done count as valid: a rerun must not turn "some lines invalid" (exit 1) into exit 2
    if plan.invalid_count and (strict or plan.valid + plan.skipped == 0):
        why = "--strict is set" if strict else "no line is valid"
        raise UsageError(f"{plan.invalid_count:,} invalid lines ({why}); nothing was sent:\n" + describe_invalid(plan))
    if plan.invalid_count:
        echo(f"batchchat: {plan.invalid_count:,} invalid lines will get an error line in the output:\n"
             + describe_invalid(plan))


def write_summary_json(summary: Summary, path: Path, echo: Callable[[str], None]) -> None:
    """`--summary-json`: the summary as JSON; a failure to write it is said, not fatal."""
    try:
        path.write_bytes(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
    except OSError as exc:
        echo(f"batchchat: cannot write summary {path}: {exc.strerror}")


async def compact_off_the_loop(output: Path, retried: set[str], control: StopControl, echo: Callable[[str], None],
                               handle_signals: bool) -> None:
    """Compact the output in a worker thread; an interrupt meanwhile waits for it (the summary follows), and an
    OSError stops the run with exit 4 (the output left whole, as it was)."""
    control.task_group = control.dispatch_scope = control.workers_scope = None  # the run's scopes are gone
    try:
        async with anyio.create_task_group() as tg:
            if handle_signals:
                tg.start_soon(_signals_while_compacting, echo)
            with anyio.CancelScope(shield=True):  # an interrupt must not leave a half-made compaction
                await anyio.to_thread.run_sync(compact, output, retried)
            tg.cancel_scope.cancel()
    except* OutputWriteError as group:
        control.output_failed(str(group.exceptions[0]))
        echo(f"batchchat: error: {group.exceptions[0]}")


async def _signals_while_compacting(echo: Callable[[str], None]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            echo(f"batchchat: {signal.Signals(signum).name}: every answer is written; the output is being "
                 "compacted to one line per id and stops in a moment")
