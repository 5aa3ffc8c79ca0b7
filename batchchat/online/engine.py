"""`Engine`: one online run of one job file, from the pre-scan to the summary.

Prepare (open the input, lock the output, read what is already done, scan the input: in a worker thread,
so a library caller's event loop is not blocked for seconds on a large file), execute (one task group:
dispatcher -> workers -> write stage, plus progress and signals), finish (compact the output to one line per
id, freeze the summary). It raises only `BatchchatError`s.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from batchchat.config.settings import RunSettings
from batchchat.errors import ExitCode, OutputWriteError, ResultCallbackError, UsageError
from batchchat.http.sender import open_sender
from batchchat.input.plan import Plan, describe_invalid, open_input, scan
from batchchat.online.attempts import Requester
from batchchat.online.collector import collect_periodically
from batchchat.online.dispatch import dispatch
from batchchat.online.stop import StopControl
from batchchat.online.workers import WorkerPool
from batchchat.online.write_stage import WriteStage
from batchchat.output.compact import compact
from batchchat.output.lines import Result
from batchchat.output.lock import RunLock
from batchchat.output.paths import check_output
from batchchat.output.resume import load_resume_index
from batchchat.output.writer import ResultWriter
from batchchat.pacing.pacer import Pacer
from batchchat.report.counters import Counters
from batchchat.report.progress import Progress
from batchchat.report.summary import Summary
from batchchat.secrets import Redactor

if TYPE_CHECKING:
    import httpx


def _open_shared(settings: RunSettings, echo: Callable[[str], None]) -> Any:
    """The shared budget store of --shared (Redis, with the outage policy of pacing/shared.py)."""
    try:
        from batchchat.pacing.shared import open_shared
    except ImportError as exc:  # the redis extra is not installed
        raise UsageError(f"--shared: {exc}") from None
    return open_shared(settings, echo)


def _stop_on_lost(shared: Any, control: StopControl,
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


def _process_info(settings: RunSettings) -> dict[str, str | int | float]:
    """What `batchchat status --shared` shows of this process (never a key or a model name)."""
    import os
    import socket
    import time

    return {"host": socket.gethostname(), "pid": os.getpid(), "output": settings.output_path().name,
            "shard": str(settings.shard) if settings.shard else "-", "started": round(time.time())}


class Engine:
    """One run of one job file. `run()` returns the summary; it raises only `BatchchatError`s."""

    def __init__(
        self,
        settings: RunSettings,
        *,
        client: httpx.AsyncClient | None = None,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.counters = Counters()
        self._client = client
        self._on_result = on_result
        self._echo = echo or (lambda text: print(text, file=sys.stderr, flush=True))
        self._redact = Redactor(settings.endpoint.api_key)
        self._shared = _open_shared(settings, self._echo) if settings.shared else None  # --shared: Redis budgets
        self._pacer = Pacer(settings, self._shared)
        self._control = StopControl(settings.grace, self._echo)

    @property
    def headers_seen(self) -> bool | None:
        """Whether the server sent x-ratelimit headers (None: no answer yet)."""
        return self._pacer.headers_seen

    async def run(self) -> Summary:
        """Prepare, run every request, and return the summary."""
        with ExitStack() as stack:
            output = self.settings.output_path()
            plan = await anyio.to_thread.run_sync(self._prepare, stack, output)
            writer = ResultWriter(output)
            writer.open()
            stack.callback(writer.close)
            progress = Progress(self.counters, self.settings.progress, self.settings.log_interval)
            try:
                if plan.to_run:  # else all done: no connection to open (nor aiohttp to import)
                    await self._execute(plan, writer, progress)
            except* OutputWriteError as group:
                self._control.output_failed(str(group.exceptions[0]))
                self._echo(f"batchchat: error: {self._control.reason}; stopped (a rerun resumes)")
            except* ResultCallbackError as group:
                raise group.exceptions[0] from group.exceptions[0].__cause__
            finally:
                progress.close()
            writer.close()
            if plan.retried_ids and self._control.exit_code != ExitCode.OUTPUT:
                with anyio.CancelScope(shield=True):  # an interrupt must not leave a half-made compaction
                    await anyio.to_thread.run_sync(compact, output, plan.retried_ids)
            return self._summary(plan.display, output)

    def _prepare(self, stack: ExitStack, output: Path) -> Plan:
        """Open the input, lock the output, read what is done and scan the input (blocking file work)."""
        path, display = open_input(self.settings.input, stack)
        check_output(output, None if self.settings.input == "-" else path)
        lock = RunLock(output)
        lock.acquire()
        stack.callback(lock.release)
        index = load_resume_index(output)
        if index.repair:
            self._echo(f"batchchat: {index.repair}")
        plan = scan(path, display, self.settings, index.done, index.failed)
        self._check_plan(plan)
        self.counters.total = plan.to_run
        self.counters.skipped = plan.skipped
        if plan.skipped:
            self._echo(f"batchchat: resuming: {plan.skipped:,} requests already done in {output}, "
                       f"{plan.to_run:,} to go")
        return plan

    def _check_plan(self, plan: Plan) -> None:
        if plan.invalid_count and (self.settings.strict or plan.valid == 0):
            why = "--strict is set" if self.settings.strict else "no line is valid"
            raise UsageError(f"{plan.invalid_count:,} invalid lines ({why}); nothing was sent:\n"
                             + describe_invalid(plan))
        if plan.invalid_count:
            self._echo(f"batchchat: {plan.invalid_count:,} invalid lines will get an error line in the output:\n"
                       + describe_invalid(plan))

    def _summary(self, display: str, output: Path) -> Summary:
        code = self._control.exit_code
        if code == ExitCode.OK and (self.counters.failed or self.counters.done < self.counters.total):
            code = ExitCode.FAILURES
        summary = Summary.from_counters(self.counters, display, str(output), int(code), self._control.reason)
        if self.settings.summary_json:
            try:
                self.settings.summary_json.write_bytes(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
            except OSError as exc:
                self._echo(f"batchchat: cannot write summary {self.settings.summary_json}: {exc.strerror}")
        return summary

    async def _execute(self, plan: Plan, writer: ResultWriter, progress: Progress) -> None:
        settings = self.settings
        control = self._control
        counters = self.counters
        buffer = max(256, settings.concurrency * 2)
        send, receive = anyio.create_memory_object_stream[Result](buffer)
        stage = WriteStage(writer, counters, self._pacer.release, self._on_result)
        sender = open_sender(settings.endpoint, settings.concurrency, self._redact, self._client)
        requester = Requester(settings, self._pacer, counters, control, sender, send)
        try:
            async with anyio.create_task_group() as tg:
                control.task_group = tg
                written = anyio.Event()
                tg.start_soon(self._write, stage, receive, written)
                tg.start_soon(progress.run)
                if self._shared is not None:
                    tg.start_soon(self._shared.keep_listed, _process_info(settings))
                if settings.handle_signals:
                    tg.start_soon(control.watch_signals, lambda: counters.in_flight)
                    tg.start_soon(collect_periodically)  # the CLI owns the process and paused the collector
                try:
                    async with anyio.create_task_group() as workers:
                        control.workers_scope = workers.cancel_scope
                        pool = WorkerPool(workers, _stop_on_lost(self._shared, control, requester.work))
                        control.dispatch_scope = anyio.CancelScope()
                        with control.dispatch_scope:
                            await _stop_on_lost(self._shared, control, dispatch)(plan, settings, self._pacer,
                                                                                 counters, control, pool, send)
                        pool.close()  # the workers finish what they hold, then end
                finally:
                    send.close()
                with anyio.CancelScope(shield=True):
                    await written.wait()  # every result handed over is on disk
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await sender.aclose()
                if self._shared is not None:
                    await self._shared.close()

    async def _write(self, stage: WriteStage, receive: Any, written: anyio.Event) -> None:
        """The write stage; a failure stops the run at once (nothing more can be recorded)."""
        try:
            await stage.run(receive)
        except (OutputWriteError, ResultCallbackError):
            self._control.stop("", grace=None)
            raise
        finally:
            written.set()


