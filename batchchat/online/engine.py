"""`Engine`: one online run of one job file, from the pre-scan to the summary.

Prepare (open the input, lock the output, read what is already done, scan the input: in a worker thread,
so a library caller's event loop is not blocked for seconds on a large file), execute (one task group:
dispatcher -> workers -> write stage, plus progress and signals), finish (compact the output to one line per
id, freeze the summary). It raises only `BatchchatError`s.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from batchchat.config.settings import RunSettings
from batchchat.errors import ExitCode, OutputWriteError, ResultCallbackError
from batchchat.http.sender import open_sender
from batchchat.input.plan import Plan, open_input
from batchchat.money.guard import Spending, check_priced
from batchchat.online.attempt_watch import AttemptWatch
from batchchat.online.attempts import Requester
from batchchat.online.collector import collect_periodically
from batchchat.online.dispatch import dispatch
from batchchat.online.health import endpoint_health
from batchchat.online.stop import StopControl
from batchchat.online.workers import WorkerPool
from batchchat.online.write_stage import WriteStage
from batchchat.output.stream import StdoutWriter, is_stdout
from batchchat.output.writer import ResultWriter
from batchchat.pacing.pacer import Pacer
from batchchat.report.counters import Counters
from batchchat.report.progress import Progress
from batchchat.report.status import StatusFile
from batchchat.report.summary import Summary
from batchchat.secrets import Redactor

if TYPE_CHECKING:
    import httpx

from batchchat.online.fleet import open_shared, process_info, shared_ledger, stop_on_lost
from batchchat.online.prepare import (
    check_plan,
    compact_off_the_loop,
    finished_seal,
    first_url,
    no_key_warning,
    open_run_cache,
    plan_run,
    start_line,
    write_summary_json,
)


class Engine:
    """One run of one job file. `run()` returns the summary; it raises only `BatchchatError`s."""

    def __init__(self, settings: RunSettings, *, client: httpx.AsyncClient | None = None,
                 on_result: Callable[[dict[str, Any]], None] | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.counters = Counters()
        self._client = client
        self._on_result = on_result
        self._echo = echo or (lambda text: print(text, file=sys.stderr, flush=True))
        self._redact = Redactor(settings.endpoint.api_key)
        self._shared = open_shared(settings, self._echo) if settings.shared else None  # --shared: Redis budgets
        self._pacer = Pacer(settings, self._shared)
        self._control = StopControl(settings.grace, self._echo)
        self._spending: Spending | None = None  # prices loaded in _prepare (a bad price file: exit 2)
        self._url = settings.endpoint.url_for(settings.defaults.endpoint or "/v1/chat/completions")
        self._sent_paths: dict[str, None] = {}  # the endpoint paths requests went to, in the order first used
        self._cache: Any = None  # --cache: cache.hook.RunCache, opened in _prepare
        self._watch: AttemptWatch | None = None  # the attempts in flight (made when the run starts sending)

    @property
    def headers_seen(self) -> bool | None:  # whether the server sent x-ratelimit headers (None: no answer yet)
        return self._pacer.headers_seen

    async def run(self) -> Summary:
        """Prepare, run every request, and return the summary."""
        with ExitStack() as stack:
            output = self.settings.output_path()
            plan = await anyio.to_thread.run_sync(self._prepare, stack, output)
            writer = StdoutWriter() if is_stdout(output) else ResultWriter(output)
            writer.open()
            stack.callback(writer.close)
            progress = Progress(self.counters, self.settings.progress, self.settings.log_interval,
                                header=start_line(self.settings, plan, output, self._url),
                                spent=lambda: self._spending.spent if self._spending is not None else None,
                                waiting=lambda: self._watch.describe_waiting() if self._watch is not None else None)
            status = None if is_stdout(output) else StatusFile(output, self.counters, plan.display, self._url)
            try:
                if plan.to_run:  # else all done: no connection to open (nor aiohttp to import)
                    await self._execute(plan, writer, progress, status)
            except* OutputWriteError as group:
                self._control.output_failed(str(group.exceptions[0]))
                self._echo(f"batchchat: error: {self._control.reason}; stopped (a rerun resumes)")
            except* ResultCallbackError as group:
                raise group.exceptions[0] from group.exceptions[0].__cause__
            finally:
                progress.close()
            with anyio.CancelScope(shield=True):  # its last fsync, off the event loop too
                await anyio.to_thread.run_sync(writer.close)
            if plan.retried_ids and self._control.exit_code != ExitCode.OUTPUT:
                await compact_off_the_loop(output, plan.retried_ids, self._control, self._echo,
                                           self.settings.handle_signals)
            summary = self._summary(plan.display, output)
            if status is not None:
                status.write("finished" if summary.exit_code in (0, 1) else "stopped", summary.exit_code,
                             finished_seal(self.settings, self.counters, plan, output, summary.exit_code))
            return summary

    def _prepare(self, stack: ExitStack, output: Path) -> Plan:
        """Open the input, lock the output, read what is done and scan the input (blocking file work)."""
        path, display = open_input(self.settings.input, stack, self.settings)
        self._spending = Spending.for_run(self.settings.prices, self.settings.max_cost, self._control.fail,
                                          shared_ledger(self.settings, self._shared, path, display))
        if self.settings.endpoint.api_key is None:
            self._echo(no_key_warning(self.settings))
        plan = plan_run(path, display, self.settings, output, stack, self._echo)
        check_plan(plan, self.settings.strict, self._echo)
        if self.settings.max_cost is not None:
            check_priced(plan, self.settings, self._spending.table)
        self._url = first_url(path, self.settings)
        self._cache = open_run_cache(self.settings, stack, self._echo)  # --cache, else None
        self.counters.total = plan.to_run
        self.counters.skipped = plan.skipped
        self.counters.left = plan.left
        if plan.skipped:
            self._echo(f"batchchat: resuming: {plan.skipped:,} requests already done in {output}, "
                       f"{plan.to_run:,} to go")
        if plan.changed:
            self._echo(f"batchchat: {plan.changed:,} requests changed since they were answered: sending them again")
        if plan.left:
            self._echo(f"batchchat: --limit {self.settings.limit:,}: {plan.left:,} more lines left for a later run")
        return plan

    def _summary(self, display: str, output: Path) -> Summary:
        code, counters = self._control.exit_code, self.counters
        if code == ExitCode.OK and (counters.failed or counters.done < counters.total):
            code = ExitCode.FAILURES
        used = ", ".join(map(self.settings.endpoint.url_for, self._sent_paths)) or self._url
        summary = Summary.from_counters(counters, display, str(output), int(code), self._control.reason, endpoint=used)
        if self._spending is not None:
            summary.cost = self._spending.to_dict(left=summary.not_finished)
        if self.settings.summary_json:
            write_summary_json(summary, self.settings.summary_json, self._echo)
        return summary

    async def _execute(self, plan: Plan, writer: ResultWriter | StdoutWriter, progress: Progress,
                       status: StatusFile | None) -> None:
        settings = self.settings
        control = self._control
        counters = self.counters
        stage = WriteStage(writer, counters, self._pacer.release, self._on_result,  # type: ignore[arg-type]
                           buffer=max(256, settings.concurrency * 2),
                           stored=self._cache.stored if self._cache is not None else None)
        send = stage  # results go to the stage as into a memory object stream
        sender = open_sender(settings.endpoint, settings.concurrency, self._redact, self._client)
        health = endpoint_health(settings.endpoint, settings.concurrency, plan.groups, control.fail, self._echo)
        watch = self._watch = AttemptWatch(sender, counters.latencies, settings.endpoint.read_timeout, self._echo)
        self._sent_paths = watch.paths
        requester = Requester(settings, self._pacer, counters, control, sender, send, self._spending,
                              health=health, watch=watch)
        try:
            async with anyio.create_task_group() as tg:
                control.task_group = tg
                written = anyio.Event()
                tg.start_soon(_write, stage, written, control)
                tg.start_soon(progress.run)
                tg.start_soon(watch.run)
                if status is not None:
                    tg.start_soon(status.run)
                if self._shared is not None:
                    tg.start_soon(self._shared.keep_listed, process_info(settings))
                if settings.handle_signals:
                    tg.start_soon(control.watch_signals, lambda: counters.in_flight)
                    tg.start_soon(collect_periodically)  # the CLI owns the process and paused the collector
                try:
                    async with anyio.create_task_group() as workers:
                        control.workers_scope = workers.cancel_scope
                        pool = WorkerPool(workers, stop_on_lost(self._shared, control, requester.work))
                        control.dispatch_scope = anyio.CancelScope()
                        with control.dispatch_scope:
                            await stop_on_lost(self._shared, control, dispatch)(plan, settings, self._pacer,
                                                                                 counters, control, pool, send,
                                                                                 self._spending, self._cache)
                        pool.close()  # the workers finish what they hold, then end
                finally:
                    send.close()
                with anyio.CancelScope(shield=True):
                    await written.wait()  # every result handed over is on disk
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await sender.aclose()
                if self._spending is not None:
                    await self._spending.aclose()  # while the shared store is open: reservations go back to it
                if self._shared is not None:
                    await self._shared.close()


async def _write(stage: WriteStage, written: anyio.Event, control: StopControl) -> None:
    """The write stage; a failure stops the run at once (nothing more can be recorded)."""
    try:
        await stage.run()
    except (OutputWriteError, ResultCallbackError):
        control.stop("", grace=None)
        raise
    finally:
        written.set()
