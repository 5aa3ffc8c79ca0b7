"""`BatchRun`: one run of a job file through the provider's Batch API (`--via batch`).

Prepare (lock the output, read the state of an earlier run or scan and split the input into chunk files),
then loop: submit what the enqueued-token queue can hold (upload, create; each id in the state file before
the next step), poll the open batches, collect each finished one (its lines on disk before they count),
send unfinished lines again (a new batch, or the online path with `--fallback online`). Finish: compact
the output to one line per id and remove the state. `--no-wait` stops after submitting; Ctrl-C stops
polling and leaves the batches running; `cancel()` cancels the open batches and collects them.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson

from batchchat.batch.client import AmbiguousError, BatchApiError, BatchClient
from batchchat.batch.collect import ChunkCollector
from batchchat.batch.split import Limits, rechunk, split_plan
from batchchat.batch.state import BatchState, Chunk, state_path
from batchchat.config.settings import RunSettings
from batchchat.errors import BatchchatError, ExitCode, OutputWriteError, UsageError
from batchchat.input.plan import describe_invalid, open_input, scan
from batchchat.output.compact import compact
from batchchat.output.lines import Result
from batchchat.output.lock import RunLock
from batchchat.output.paths import check_output
from batchchat.output.resume import load_resume_index
from batchchat.output.writer import ResultWriter
from batchchat.pacing.tokens import usage_totals
from batchchat.report.counters import Counters
from batchchat.report.progress import Progress
from batchchat.report.summary import Summary

TERMINAL = frozenset({"completed", "expired", "cancelled", "failed"})
_LIMIT = re.compile(r"Limit:\s*([\d,]+)")
AMBIGUOUS_TRIES = 6  # uploads or creations whose fate was unknown, looked up and tried again
FILL = 0.9  # fill the enqueued-token queue to this share of its limit (our estimates are estimates)


@dataclass(slots=True)
class BatchSummary(Summary):
    """The summary of a Batch API run: the online summary plus batches and cost against the online price."""

    batches: int = 0
    cost_usd: float | None = None
    online_cost_usd: float | None = None
    state_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready data."""
        return asdict(self)

    def render(self) -> str:
        """The summary as a few lines for a person."""
        lines = [line for line in Summary.render(self).split("\n") if not line.startswith("  latency")]
        extra = [f"  via        Batch API, {self.batches:,} batches"]
        if self.cost_usd is not None and self.online_cost_usd is not None:
            saved = self.online_cost_usd - self.cost_usd
            extra.append(f"  cost       ${self.cost_usd:,.4f} at Batch API prices "
                         f"(online ${self.online_cost_usd:,.4f}, saved ${saved:,.4f})")
        if self.state_file:
            extra.append(f"  state      {self.state_file} (rerun the same command to collect)")
        return "\n".join(lines[:1] + extra + lines[1:])


class BatchRun:
    """One Batch API run of one job file. `run()` returns the summary; it raises only `BatchchatError`s."""

    def __init__(self, settings: RunSettings, *, on_result: Callable[[dict[str, Any]], None] | None = None,
                 echo: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = anyio.sleep) -> None:
        self.settings = settings
        self.options = settings.batch
        self.counters = Counters()
        self._display = Counters()  # what progress shows: collected + what the open batches report
        self._on_result = on_result
        self._echo = echo or (lambda text: print(text, file=sys.stderr, flush=True))
        self._clock = clock
        self._sleep = sleep
        self._exit = ExitCode.OK
        self._reason: str | None = None
        self._output = settings.output_path()
        self._state: BatchState | None = None
        self._writer: ResultWriter | None = None
        self._collector: ChunkCollector | None = None
        self._display_name = settings.input
        self._retried: set[str] = set()
        self._costs: tuple[Any, Any] | None = None
        self._batches = 0
        self._index_lines = 0
        self._nowait = False
        self._model = ""  # the model of the chunk being collected (for the cost)

    # ---- the run ----------------------------------------------------------------------------------------

    async def run(self, cancel: bool = False) -> Summary:
        """Prepare, submit, poll, collect; return the summary. `cancel`: cancel the open batches instead."""
        with ExitStack() as stack:
            await anyio.to_thread.run_sync(self._prepare, stack, cancel)
            state = self._state
            assert state is not None and self._writer is not None
            progress = Progress(self._display, self.settings.progress, self.settings.log_interval)
            try:
                if not state.chunks or all(c.phase == "done" for c in state.chunks):
                    pass
                else:
                    await self._loop(state, progress, cancel)
            except OutputWriteError as exc:
                self._exit, self._reason = ExitCode.OUTPUT, str(exc)
            finally:
                progress.close()
                self._writer.close()
            if state.chunks is not None and all(c.phase == "done" for c in state.chunks) \
                    and self._exit in (ExitCode.OK, ExitCode.FAILURES):
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._finish, state)
            return self._summary(state)

    def _prepare(self, stack: ExitStack, cancel: bool) -> None:
        settings = self.settings
        output = self._output
        if str(output) == "-":
            raise UsageError("--via batch writes to a file (its state and batch files sit beside it); give -o FILE")
        if getattr(settings, "max_cost", None) is not None and not cancel:
            raise UsageError("--max-cost is not supported with --via batch yet (the Batch API bills half the price)")
        if cancel:
            check_output(output, None)
            self._display_name = str(output)
        else:
            input_path, self._display_name = open_input(settings.input, stack, settings)
            check_output(output, None if settings.input == "-" else input_path)
        lock = RunLock(output)
        lock.acquire()
        stack.callback(lock.release)
        spath = state_path(output)
        state = BatchState.load(spath)
        if state is not None and not state.split_done:
            state = None  # a crash while splitting: nothing was uploaded, split again
        if state is not None and not cancel and state.input != self._display_name:
            raise UsageError(f"{output} is the output of an unfinished batch run of {state.input}; rerun that "
                             f"command to finish it, or `batchchat cancel {output}`")
        if state is not None:
            self._repair(state)
        elif cancel:
            raise UsageError(f"no batch run to cancel: {spath} does not exist")
        index = load_resume_index(output)
        if index.repair:
            self._echo(f"batchchat: {index.repair}")
        self._writer = ResultWriter(output)
        self._writer.open()
        stack.callback(self._writer.close)
        self._collector = ChunkCollector(self._writer, self._count)
        if state is not None:
            self._state = state
            self._index_lines = index.lines
            work = state.work_dir
            retried = work / "retried.json"
            if retried.exists():
                self._retried = set(orjson.loads(retried.read_bytes()))
            pending = sum(c.requests for c in state.chunks if c.phase != "done")
            self.counters.total = self._display.total = pending
            self.counters.skipped = self._display.skipped = index.lines
            if pending:
                self._echo(f"batchchat: resuming the batch run in {spath}: {pending:,} requests in "
                           f"{sum(1 for c in state.chunks if c.phase != 'done')} batches to finish")
            return
        # a fresh run: scan, split, write the state, and only then upload anything
        plan = scan(input_path, self._display_name, settings, index.done, index.failed)
        if plan.invalid_count and (settings.strict or plan.valid == 0):
            why = "--strict is set" if settings.strict else "no line is valid"
            raise UsageError(f"{plan.invalid_count:,} invalid lines ({why}); nothing was sent:\n"
                             + describe_invalid(plan))
        if plan.invalid_count:
            self._echo(f"batchchat: {plan.invalid_count:,} invalid lines will get an error line in the output:\n"
                       + describe_invalid(plan))
        self.counters.total = self._display.total = plan.to_run
        self.counters.skipped = self._display.skipped = plan.skipped
        if plan.skipped:
            self._echo(f"batchchat: resuming: {plan.skipped:,} requests already done in {output}, "
                       f"{plan.to_run:,} to go")
        state = BatchState(spath, self._display_name, fallback=self.options.fallback)
        work = state.work_dir
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        self._retried = set(plan.retried_ids)
        if self._retried:
            (work / "retried.json").write_bytes(orjson.dumps(sorted(self._retried)))
        self._state = state
        if not plan.to_run:
            state.split_done = True
            return
        limits = Limits(self.options.max_requests, self.options.max_bytes)
        rejected: list[Result] = []

        def reject(result: Result) -> None:
            rejected.append(result)
            if len(rejected) >= 1024:
                self._write_now(rejected)

        state.chunks = split_plan(plan, settings, work, limits, 1, reject)
        self._write_now(rejected)
        state.split_done = True
        state.save()
        if state.chunks:
            self._echo(f"batchchat: {sum(c.requests for c in state.chunks):,} requests in {len(state.chunks)} batch "
                       f"files ({work}); state in {spath}")

    def _write_now(self, results: list[Result]) -> None:
        """Write error lines found while splitting (before anything is uploaded)."""
        from batchchat.output.lines import encode_result

        assert self._writer is not None
        lines = [encode_result(r, f"batch_req_{r.custom_id}") for r in results]
        if lines:
            self._writer.write(b"".join(lines), time.monotonic())
            for result, line in zip(results, lines, strict=True):
                self._count(result, line, "")
        results.clear()

    def _repair(self, state: BatchState) -> None:
        """Undo a collect a crash interrupted: cut the output back to where that chunk's lines began."""
        if not any(c.phase == "collecting" for c in state.chunks):
            return
        for chunk in state.chunks:
            if chunk.phase != "collecting":
                continue
            if chunk.collect_from is not None and self._output.exists():
                size = self._output.stat().st_size
                if size > chunk.collect_from:
                    with self._output.open("r+b") as handle:
                        handle.truncate(chunk.collect_from)
                    self._echo(f"batchchat: {self._output}: removed {size - chunk.collect_from} bytes of an "
                               f"interrupted collect of batch file {chunk.n}; collecting it again")
            chunk.phase = "submitted" if chunk.kind == "batch" else "ready"
            chunk.collect_from = None
        state.save()

    def _finish(self, state: BatchState) -> None:
        """Every chunk collected: one line per id in the output, the state and the chunk files removed."""
        if self._retried:
            compact(self._output, self._retried)
        state.path.unlink(missing_ok=True)
        shutil.rmtree(state.work_dir, ignore_errors=True)

    # ---- the loop ---------------------------------------------------------------------------------------

    async def _loop(self, state: BatchState, progress: Progress, cancel: bool) -> None:
        settings = self.settings
        retry = settings.retry
        async with BatchClient(settings.endpoint, backoff_base=retry.backoff_base,
                               backoff_max=max(retry.backoff_max, 30.0), max_wait=max(retry.max_wait, 120.0)) as client:
            self._client = client
            async with anyio.create_task_group() as tg:
                tg.start_soon(progress.run)
                if settings.handle_signals:
                    tg.start_soon(self._watch_signals, tg.cancel_scope)
                try:
                    await self._recover(state)
                    if cancel:
                        await self._cancel_open(state)
                    await self._drive(state, cancel)
                except* BatchApiError as group:
                    exc = group.exceptions[0]
                    assert isinstance(exc, BatchApiError)
                    self._exit = ExitCode.FAILURES
                    self._reason = f"{exc.message}; rerun the same command to resume"
                    self._echo(f"batchchat: error: {self._reason}")
                except* BatchchatError as group:
                    error = group.exceptions[0]
                    assert isinstance(error, BatchchatError)
                    self._exit = error.exit_code
                    self._reason = str(error)
                    self._echo(f"batchchat: error: {error}")
                tg.cancel_scope.cancel()
            for counters in (self.counters, self._display):
                counters.rate_limited, counters.retries = client.rate_limited, client.retries

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        import signal

        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                self._exit = ExitCode.INTERRUPTED
                self._reason = (f"interrupted by {name}; the batches keep running (they are paid for): rerun the "
                                "same command to collect them, or `batchchat cancel OUTPUT` to cancel them")
                self._echo(f"batchchat: {name}: stopped polling; {self._reason}")
                scope.cancel()
                return

    async def _drive(self, state: BatchState, cancel: bool) -> None:
        """Submit, poll and collect until every chunk is done (with --no-wait: until nothing more changes).

        A finished batch is collected in a task of its own (one at a time: they share the output), so polling
        and submitting go on while a large file is downloaded and written."""
        self._write_lock = anyio.Lock()
        self._collecting: set[int] = set()
        self._wake = anyio.Event()
        async with anyio.create_task_group() as collects:
            self._collects = collects
            await self._drive_loop(state, cancel)

    async def _drive_loop(self, state: BatchState, cancel: bool) -> None:
        interval = self.options.poll_interval
        while True:
            if not cancel:
                await self._submit(state)
            else:
                await self._cancel_unsubmitted(state)
            for chunk in [c for c in state.chunks if c.kind == "online" and c.phase == "ready"]:
                await self._run_online(state, chunk)
                if self._exit not in (ExitCode.OK, ExitCode.FAILURES):
                    return
            open_chunks = [c for c in state.chunks if c.open and c.n not in self._collecting]
            if not open_chunks and not self._collecting and not any(c.phase != "done" for c in state.chunks):
                return
            before = [c.status for c in open_chunks]
            finished = await self._poll(state, open_chunks)
            self._update_display(state)
            if finished:
                interval = self.options.poll_interval
                continue
            if before != [c.status for c in open_chunks]:
                interval = self.options.poll_interval
            unsent = any(c.phase in ("ready", "uploaded") and c.kind == "batch" and c.model not in state.token_limits
                         for c in state.chunks)  # waiting for a batch of their model to pass validation
            if self.options.no_wait and not cancel and not unsent:
                ids = ", ".join(c.batch_id or "?" for c in open_chunks)
                self._reason = (f"--no-wait: {len(open_chunks)} batches running ({ids}); rerun the same command "
                                "to collect them")
                self._echo(f"batchchat: {self._reason}")
                self._nowait = True
                return
            with anyio.move_on_after(interval):
                await self._wake.wait()  # a collect finished: room in the queue, maybe the end
            if self._wake.is_set():
                self._wake = anyio.Event()
            if not any(c.status == "finalizing" for c in open_chunks):  # about to finish: keep polling
                interval = min(self.options.poll_max, interval * 1.5)

    # ---- submit -----------------------------------------------------------------------------------------

    def _enqueued(self, state: BatchState, model: str) -> float:
        ratio = state.token_ratio.get(model, 1.0)
        return sum(c.tokens * ratio for c in state.chunks if c.open and c.model == model
                   and c.status not in TERMINAL)

    async def _submit(self, state: BatchState) -> None:
        for chunk in list(state.chunks):
            if chunk.kind != "batch" or chunk.phase not in ("ready", "uploaded"):
                continue
            limit = state.token_limits.get(chunk.model)
            if limit is None and any(c.open and c.model == chunk.model and c.status in (None, "validating")
                                     for c in state.chunks):
                continue  # limit unknown: one batch in validation per model, so at most one is rejected for it
            if limit is not None:
                ratio = state.token_ratio.get(chunk.model, 1.0)
                need = chunk.tokens * ratio
                if need > limit * FILL and chunk.requests > 1:
                    self._resplit(state, chunk, int(limit * FILL / ratio), "to fit the enqueued-token limit")
                    continue
                if self._enqueued(state, chunk.model) + need > limit * FILL and self._enqueued(state, chunk.model):
                    continue  # the queue is full: submitted as earlier batches finish
            await self._upload(state, chunk)
            await self._create(state, chunk)

    def _resplit(self, state: BatchState, chunk: Chunk, max_tokens: int, why: str) -> None:
        limits = Limits(self.options.max_requests, self.options.max_bytes, max(1, max_tokens))
        parts = rechunk(state.work_dir, chunk, None, limits, state.next_n())
        chunk.phase, chunk.note = "done", f"split into {len(parts)} files {why}"
        state.chunks.extend(parts)
        state.save()
        self._remove_files(state, chunk)

    async def _upload(self, state: BatchState, chunk: Chunk) -> None:
        if chunk.phase != "ready":
            return
        chunk.phase = "uploading"
        state.save()  # the intent first: a crash from here on is resolved by listing the files
        name = state.upload_name(chunk)
        for attempt in range(1, AMBIGUOUS_TRIES + 1):
            try:
                answer = await self._client.upload(state.work_dir / chunk.name, name)
                break
            except AmbiguousError as exc:
                self._echo(f"batchchat: upload of {name} may have failed ({exc}); looking it up")
                found = await self._find_files(state, {name})
                if name in found:
                    answer = found[name]
                    break
                if attempt == AMBIGUOUS_TRIES:
                    raise BatchApiError(None, "upload_failed",
                                        f"uploading {name} failed {attempt} times: {exc}") from None
                await self._sleep(min(30.0, self.settings.retry.backoff_base * 2.0 ** attempt))
        chunk.file_id = answer["id"]
        chunk.phase = "uploaded"
        state.save()

    async def _create(self, state: BatchState, chunk: Chunk) -> None:
        assert chunk.file_id is not None
        chunk.phase = "creating"
        state.save()
        for attempt in range(1, AMBIGUOUS_TRIES + 1):
            try:
                answer = await self._client.create(chunk.file_id, chunk.endpoint, state.metadata(chunk))
                break
            except AmbiguousError as exc:
                self._echo(f"batchchat: creating the batch of file {chunk.n} may have failed ({exc}); looking it up")
                found = await self._find_batches(state, {chunk.n})
                if chunk.n in found:
                    answer = found[chunk.n]
                    break
                if attempt == AMBIGUOUS_TRIES:
                    raise BatchApiError(None, "create_failed", f"creating the batch of file {chunk.n} failed "
                                        f"{attempt} times: {exc}") from None
                await self._sleep(min(30.0, self.settings.retry.backoff_base * 2.0 ** attempt))
        chunk.batch_id = answer["id"]
        chunk.status = answer.get("status")
        chunk.phase = "submitted"
        chunk.submitted_at = time.time()
        state.save()
        self._batches += 1
        self._echo(f"batchchat: batch file {chunk.n}: {chunk.requests:,} requests ({chunk.model}) -> {chunk.batch_id}")

    async def _recover(self, state: BatchState) -> None:
        """Resolve intents a crash left: find the files and batches the provider has and the state lacks."""
        uploading = {state.upload_name(c): c for c in state.chunks if c.phase == "uploading"}
        if uploading:
            found = await self._find_files(state, set(uploading))
            for name, chunk in uploading.items():
                if name in found:
                    chunk.file_id, chunk.phase = found[name]["id"], "uploaded"
                    self._echo(f"batchchat: found the upload of batch file {chunk.n} ({chunk.file_id}) a crash left "
                               "out of the state; not uploading it again")
                else:
                    chunk.phase = "ready"
            state.save()
        creating = {c.n: c for c in state.chunks if c.phase == "creating"}
        if creating:
            found = await self._find_batches(state, set(creating))
            for n, chunk in creating.items():
                if n in found:
                    chunk.batch_id, chunk.phase = found[n]["id"], "submitted"
                    chunk.status = found[n].get("status")
                    self._echo(f"batchchat: found batch {chunk.batch_id} of batch file {n} a crash left out of the "
                               "state; not creating it again")
                else:
                    chunk.phase = "uploaded"
            state.save()

    async def _find_files(self, state: BatchState, names: set[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        async for item in self._client.list_files():
            if item.get("filename") in names and item.get("filename") not in found:
                found[item["filename"]] = item
            if len(found) == len(names) or (item.get("created_at") or 0) < state.created - 3600:
                break
        return found

    async def _find_batches(self, state: BatchState, numbers: set[int]) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        async for item in self._client.list_batches():
            meta = item.get("metadata") or {}
            if meta.get("batchchat_run") == state.run_tag:
                try:
                    n = int(meta.get("batchchat_chunk", ""))
                except ValueError:
                    n = -1
                if n in numbers and n not in found:
                    found[n] = item
            if len(found) == len(numbers) or (item.get("created_at") or 0) < state.created - 3600:
                break
        return found

    # ---- poll and collect -------------------------------------------------------------------------------

    async def _poll(self, state: BatchState, chunks: list[Chunk]) -> bool:
        changed = False
        for chunk in chunks:
            assert chunk.batch_id is not None
            batch = await self._client.retrieve(chunk.batch_id)
            status = batch.get("status")
            counts = batch.get("request_counts") or {}
            if status != chunk.status:
                self._echo(f"batchchat: batch {chunk.batch_id} (file {chunk.n}): {status}"
                           + (f", {counts.get('completed', 0):,}/{counts.get('total', 0):,} done" if counts else ""))
            chunk.status, chunk.counts = status, dict(counts)
            if status in TERMINAL:
                errors = (batch.get("errors") or {}).get("data") or []
                if status == "failed" and chunk.requests > 1 and any(e.get("code") == "token_limit_exceeded"
                                                                     for e in errors):
                    await self._collect(state, chunk, batch)  # learn the limit before anything else is submitted
                    changed = True
                    continue
                self._collecting.add(chunk.n)
                self._collects.start_soon(self._collect_in_turn, state, chunk, batch)
                changed = True
        return changed

    async def _collect_in_turn(self, state: BatchState, chunk: Chunk, batch: dict[str, Any]) -> None:
        try:
            async with self._write_lock:
                await self._collect(state, chunk, batch)
        finally:
            self._collecting.discard(chunk.n)
            self._wake.set()

    async def _collect(self, state: BatchState, chunk: Chunk, batch: dict[str, Any]) -> None:
        status = batch["status"]
        work = state.work_dir
        errors = (batch.get("errors") or {}).get("data") or []
        token_limited = status == "failed" and any(e.get("code") == "token_limit_exceeded" for e in errors)
        if token_limited and chunk.requests > 1:
            self._learn_limit(state, chunk, errors)
            self._resplit(state, chunk, int(state.token_limits[chunk.model] * FILL
                                            / state.token_ratio.get(chunk.model, 1.0)), "after token_limit_exceeded")
            return
        self._learn_ratio(state, chunk, batch)
        assert self._writer is not None
        chunk.phase = "collecting"
        chunk.collect_from = self._writer_size()
        state.save()
        files: list[Path] = []
        for key, suffix in (("output_file_id", "out"), ("error_file_id", "err")):
            file_id = batch.get(key)
            if file_id:
                dest = work / f"chunk-{chunk.n:05d}.{suffix}.jsonl"
                await self._client.download(file_id, dest)
                files.append(dest)
        resend = status in ("expired", "cancelled") and chunk.note != "cancelled"
        missing: tuple[str, str] | None = None
        if status == "failed":
            missing = ("batch_failed", self._failure_reason(state, chunk, errors))
            self._echo(f"batchchat: batch {chunk.batch_id} (file {chunk.n}) failed: {missing[1]}")
        elif status == "completed":
            missing = ("missing_from_batch_output", f"batch {chunk.batch_id} completed without a line for this id")
        elif not resend:
            missing = (f"batch_{status}", f"batch {chunk.batch_id} was {status} before running this line")
        attempts = self._generation(state, chunk)
        self._model = chunk.model
        collector = self._collector
        assert collector is not None
        with anyio.CancelScope(shield=True):
            got = await anyio.to_thread.run_sync(collector.collect, work, chunk, files, status, resend, missing,
                                                 attempts)
        new: list[Chunk] = []
        if got.unfinished:
            limit = state.token_limits.get(chunk.model)
            max_tokens = None if limit is None else int(limit * FILL / state.token_ratio.get(chunk.model, 1.0))
            limits = Limits(self.options.max_requests, self.options.max_bytes, max_tokens)
            new = rechunk(work, chunk, got.unfinished, limits, state.next_n())
            how = "through the online path" if state.fallback == "online" else "in a new batch"
            for part in new:
                part.kind = "online" if state.fallback == "online" else "batch"
            self._echo(f"batchchat: batch {chunk.batch_id} {status}: {got.succeeded + got.failed:,} lines kept, "
                       f"{len(got.unfinished):,} unfinished sent again {how}")
        chunk.phase, chunk.collect_from = "done", None
        chunk.note = chunk.note or status
        state.chunks.extend(new)
        state.save()
        self._remove_files(state, chunk, *files)

    def _remove_files(self, state: BatchState, chunk: Chunk, *extra: Path) -> None:
        for path in (state.work_dir / chunk.name, state.work_dir / chunk.index_name, *extra):
            path.unlink(missing_ok=True)

    def _writer_size(self) -> int:
        return self._output.stat().st_size

    def _generation(self, state: BatchState, chunk: Chunk) -> int:
        by_n = {c.n: c for c in state.chunks}
        depth, parent = 1, chunk.parent
        while parent is not None and parent in by_n:
            if by_n[parent].kind == "batch" and by_n[parent].batch_id:
                depth += 1
            parent = by_n[parent].parent
        return depth

    def _learn_limit(self, state: BatchState, chunk: Chunk, errors: list[dict[str, Any]]) -> None:
        limit = None
        for error in errors:
            found = _LIMIT.search(str(error.get("message") or ""))
            if found:
                limit = int(found.group(1).replace(",", ""))
                break
        if limit is None:  # no figure given: what was enqueued besides this batch, or half of this batch
            ratio = state.token_ratio.get(chunk.model, 1.0)
            limit = int(self._enqueued(state, chunk.model)) or int(chunk.tokens * ratio / 2)
        state.token_limits[chunk.model] = max(1, limit)
        self._echo(f"batchchat: batch {chunk.batch_id} rejected: token_limit_exceeded; the enqueued-token limit of "
                   f"{chunk.model} is {limit:,}: submitting only what fits, the rest as batches finish")

    @staticmethod
    def _learn_ratio(state: BatchState, chunk: Chunk, batch: dict[str, Any]) -> None:
        usage = batch.get("usage") or {}
        counts = batch.get("request_counts") or {}
        prompt = usage.get("input_tokens")
        if batch.get("status") == "completed" and isinstance(prompt, int) and prompt and chunk.tokens \
                and counts.get("completed", 0) == chunk.requests:
            state.token_ratio[chunk.model] = max(1.0, prompt / chunk.tokens)

    def _failure_reason(self, state: BatchState, chunk: Chunk, errors: list[dict[str, Any]]) -> str:
        """Why a batch failed validation, with the input's file:line where the provider names a line."""
        if not errors:
            return "the batch failed (no reason given)"
        lines: dict[int, int] = {}
        wanted = {e.get("line") for e in errors if isinstance(e.get("line"), int)}
        if wanted:
            from batchchat.batch.split import read_index

            for i, entry in enumerate(read_index(state.work_dir / chunk.index_name), start=1):
                if i in wanted:
                    lines[i] = entry["line"]
        parts = []
        for error in errors[:5]:
            where = ""
            if isinstance(error.get("line"), int):
                where = f"{self._display_name}:{lines.get(error['line'], '?')}: "
            parts.append(f"{where}{error.get('code') or 'error'}: {error.get('message') or ''}".strip())
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return "; ".join(parts) + more

    # ---- online fallback --------------------------------------------------------------------------------

    async def _run_online(self, state: BatchState, chunk: Chunk) -> None:
        """Send a chunk's lines through the online path into a side output, then collect that like a batch."""
        from batchchat.config.load import with_options
        from batchchat.online.engine import Engine

        work = state.work_dir
        side = work / f"chunk-{chunk.n:05d}.online.jsonl"
        settings = with_options(self.settings, input=str(work / chunk.name), output=side, summary_json=None,
                                progress="off", handle_signals=False, via="online", strict=False)
        self._echo(f"batchchat: sending {chunk.requests:,} unfinished requests through the online path")
        summary = await Engine(settings, echo=self._echo).run()
        if summary.exit_code not in (ExitCode.OK, ExitCode.FAILURES) or summary.not_finished:
            self._exit = ExitCode(summary.exit_code) if summary.exit_code else ExitCode.FAILURES
            self._reason = summary.stopped or "the online fallback did not finish; rerun the same command"
            return
        async with self._write_lock:
            chunk.phase = "collecting"
            chunk.collect_from = self._writer_size()
            state.save()
            self._model = chunk.model
            collector = self._collector
            assert collector is not None
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(collector.collect, work, chunk, [side], "completed", False,
                                               ("missing_from_online_output", "the online fallback wrote no line"), 1)
            chunk.phase, chunk.collect_from, chunk.note = "done", None, "online"
            state.save()
        self._remove_files(state, chunk, side, side.with_name(side.name + ".lock"))

    # ---- cancel -----------------------------------------------------------------------------------------

    async def _cancel_open(self, state: BatchState) -> None:
        for chunk in state.chunks:
            if chunk.open and chunk.batch_id and chunk.status not in TERMINAL:
                try:
                    answer = await self._client.cancel(chunk.batch_id)
                    chunk.status = answer.get("status", chunk.status)
                except BatchApiError as exc:  # already finished: collected as it is
                    self._echo(f"batchchat: cannot cancel {chunk.batch_id}: {exc.message}")
                chunk.note = "cancelled"
                self._echo(f"batchchat: cancelling batch {chunk.batch_id} (file {chunk.n})")
        state.save()

    async def _cancel_unsubmitted(self, state: BatchState) -> None:
        """`cancel`: lines never submitted get an error line (a rerun of `run` tries them again)."""
        todo = [c for c in state.chunks if c.phase in ("ready", "uploaded")]
        if todo:
            async with self._write_lock:
                self._cancel_chunks(state, todo)

    def _cancel_chunks(self, state: BatchState, todo: list[Chunk]) -> None:
        for chunk in todo:
            chunk.phase = "collecting"
            chunk.collect_from = self._writer_size()
            state.save()
            assert self._collector is not None
            self._collector.collect(state.work_dir, chunk, [], "cancelled", False,
                                    ("batch_cancelled", "cancelled before it was submitted"), 0)
            chunk.phase, chunk.collect_from, chunk.note = "done", None, "cancelled"
            state.save()
            self._remove_files(state, chunk)

    # ---- counting and summary ---------------------------------------------------------------------------

    def _count(self, result: Result, line: bytes, _line_id: str) -> None:
        counters = self.counters
        if result.ok:
            counters.succeeded += 1
            prompt, completion = usage_totals(result.usage)
            counters.prompt_tokens += prompt
            counters.completion_tokens += completion
            self._add_cost(result)
        else:
            counters.failed += 1
            counters.errors[result.error_code or "error"] += 1
        counters.attempts += max(result.attempts, 0)
        if self._on_result is not None:
            self._on_result(orjson.loads(line))

    def _add_cost(self, result: Result) -> None:
        if self._costs is None:
            try:
                from batchchat.money import CostTally, PriceTable

                table = PriceTable.load(getattr(self.settings, "prices", None))
                self._costs = (CostTally(table, batch=True), CostTally(table, batch=False))
            except Exception:  # prices are a nicety: a run never fails for them
                self._costs = (None, None)
        batch_tally, online_tally = self._costs
        if batch_tally is None:
            return
        model = self._model
        batch_tally.add(model, result.usage)
        online_tally.add(model, result.usage)

    def _update_display(self, state: BatchState) -> None:
        display, counters = self._display, self.counters
        running_ok = running_failed = in_flight = 0
        for chunk in state.chunks:
            if chunk.open and chunk.status not in TERMINAL:
                running_ok += chunk.counts.get("completed", 0)
                running_failed += chunk.counts.get("failed", 0)
                in_flight += chunk.requests
        display.succeeded = counters.succeeded + running_ok
        display.failed = counters.failed + running_failed
        display.in_flight = in_flight - running_ok - running_failed
        display.prompt_tokens, display.completion_tokens = counters.prompt_tokens, counters.completion_tokens

    def _summary(self, state: BatchState) -> Summary:
        counters = self.counters
        code = self._exit
        if code == ExitCode.OK and not self._nowait and (counters.failed or counters.done < counters.total):
            code = ExitCode.FAILURES
        base = Summary.from_counters(counters, self._display_name, str(self._output), int(code), self._reason)
        cost = online = None
        if self._costs is not None and self._costs[0] is not None and not self._costs[0].unknown:
            cost, online = self._costs[0].total, self._costs[1].total
        left = state.path if state.path.exists() else None
        summary = BatchSummary(**{f: getattr(base, f) for f in Summary.__dataclass_fields__},
                               batches=self._batches, cost_usd=cost, online_cost_usd=online,
                               state_file=str(left) if left else None)
        if self.settings.summary_json:
            try:
                self.settings.summary_json.write_bytes(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
            except OSError as exc:
                self._echo(f"batchchat: cannot write summary {self.settings.summary_json}: {exc.strerror}")
        return summary
