"""Wire the stages of a run and own them: reader -> dispatcher -> workers -> writer.

One anyio task group owns the run. The dispatcher reads the input lazily and admits one request at a time
through the concurrency gate and the rate limiter; each admitted request gets a worker task, which sends it
(retrying through the policy), settles its token charge and hands the result to the writer over a bounded
memory stream. The writer is the only task that touches the output, and a result counts as done only once
it is written. Stopping (a signal, a rejected key, a write failure) cancels dispatch at once; in-flight
requests get a grace period to finish and be written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from batchchat.adaptive import AimdController, ConcurrencyGate
from batchchat.config import RunSettings
from batchchat.errors import ExitCode, OutputWriteError, UsageError
from batchchat.headers import RateLimitHeaders
from batchchat.jobs import (
    LEADING_ID,
    InvalidLine,
    Job,
    block_lines,
    derived_id,
    iter_blocks,
    iter_raw_lines,
    leading_ids,
    parse_line,
)
from batchchat.limiter import RateLimiter
from batchchat.progress import Progress
from batchchat.results import Result, ResultWriter, RunLock, compact, encode_result, load_resume_index
from batchchat.retry import retry_after_failure
from batchchat.secrets import Redactor
from batchchat.summary import Counters, Summary
from batchchat.tokens import PromptEstimator, charged_tokens, completion_cap, prompt_estimate, usage_totals
from batchchat.transport import Fatal, Outcome, Retryable, Sender, Success, open_sender

if TYPE_CHECKING:
    import httpx

DEFAULT_429_COOLDOWN = 1.0  # seconds, when a 429 names no Retry-After
GARBAGE_PERIOD = 10.0  # seconds between the engine's own collections while automatic ones are paused
_SKIP = 1


@dataclass(slots=True)
class Plan:
    """What the pre-scan of the input found: what to send, what is bad, what is already done."""

    path: Path
    display: str
    skip: bytearray  # by line number: 1 = already done in the output, not read again
    to_run: int = 0
    last_line: int = 0  # the last line with work to do: dispatch stops there
    invalid: list[InvalidLine] = field(default_factory=list)
    invalid_count: int = 0
    valid: int = 0
    skipped: int = 0
    estimated_tokens: int = 0
    retried_ids: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def open_input(spec: str, stack: ExitStack) -> tuple[Path, str]:
    """Resolve the input: a readable regular file, or standard input spooled to a temporary file."""
    if spec == "-":
        fd, name = tempfile.mkstemp(prefix="batchchat-stdin-", suffix=".jsonl")
        stack.callback(os.unlink, name)
        with os.fdopen(fd, "wb") as tmp:
            shutil.copyfileobj(sys.stdin.buffer, tmp)
        return Path(name), "<stdin>"
    path = Path(spec)
    if not path.exists():
        raise UsageError(f"input {spec} does not exist")
    if path.is_dir():
        raise UsageError(f"input {spec} is a directory, not a JSONL file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot read input {spec}: {exc.strerror}") from None
    return path, spec


def check_output(output: Path, input_path: Path | None) -> None:
    """Raise `UsageError` when the output cannot be used."""
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"output directory {parent} does not exist")
    if output.is_dir():
        raise UsageError(f"output {output} is a directory")
    if input_path is not None and output.resolve() == input_path.resolve():
        raise UsageError(f"output {output} is the input file; choose another -o")
    # no write bit at all is "not writable" even for root, as the writer judges it mid-run
    if output.exists() and (not os.access(output, os.W_OK) or not output.stat().st_mode & 0o222):
        raise UsageError(f"output {output} is not writable")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"output directory {parent} is not writable")


def scan(path: Path, display: str, settings: RunSettings, done: set[str], failed: set[str]) -> Plan:
    """Read the whole input once: validate every line, find duplicate ids, mark lines already done.

    The input is read a block of lines at a time; a block whose every line starts with a custom_id already
    done is skipped whole, without a look at each line.
    """
    from array import array
    from itertools import pairwise

    plan = Plan(path, display, bytearray())
    # Lines with work to do keep the hash of their id, 8 bytes each, instead of a dict of str ids (~130 MB
    # for a million); ids that share a hash are checked exactly by a second pass, which also words the
    # errors. A done id is met at most once: `unmet` holds those not met yet, so a second meeting is a repeat.
    hashes = array("q")
    unmet = set(done)
    repeated: set[int] = set()
    lines = 0
    first = 1  # the number of the block's first line
    for block in iter_blocks(path):
        skipped = _skip_block(plan, first, block, unmet) if unmet else 0
        if skipped:
            lines += skipped
            first += skipped
            continue
        for line_no, raw in block_lines(first, block):
            lines += 1
            custom_id = _done_id(raw, line_no, done) if done else None
            if custom_id is None:
                item = parse_line(raw, line_no, settings.defaults)
                custom_id = item.custom_id
            if custom_id in done:
                if custom_id in unmet:
                    unmet.remove(custom_id)
                else:
                    repeated.add(hash(custom_id))
                _mark_skipped(plan, line_no, 1)
                continue
            hashes.append(hash(custom_id))
            if custom_id in failed:
                plan.retried_ids.add(custom_id)
            plan.to_run += 1
            plan.last_line = line_no
            if isinstance(item, InvalidLine):
                plan.invalid_count += 1
                if len(plan.invalid) < 20:
                    plan.invalid.append(item)
            else:
                plan.valid += 1
                plan.estimated_tokens += prompt_estimate(item) + completion_cap(item)
        first += block.count(b"\n")
    del unmet
    ordered = sorted(hashes)
    del hashes
    shared = {a for a, b in pairwise(ordered) if a == b} | repeated
    del ordered
    duplicates = _duplicate_ids(path, display, settings, shared) if shared else []
    if duplicates:
        more = f"\n(and {len(duplicates) - 10} more)" if len(duplicates) > 10 else ""
        raise UsageError("custom_id must be unique within a file:\n" + "\n".join(duplicates[:10]) + more)
    if not lines:
        raise UsageError(f"{display}: no requests (the file is empty or has only blank lines)")
    return plan


def _skip_block(plan: Plan, first: int, block: bytes, unmet: set[str]) -> int:
    """Skip a whole block at once if every line starts with a plain custom_id, done and not met before: the
    number of lines skipped, or 0 (nothing changed)."""
    ids = leading_ids(block) if block.endswith(b"\n") else None
    if not ids or not unmet.issuperset(ids):
        return 0
    before = len(unmet)
    unmet.difference_update(ids)
    if before - len(unmet) != len(ids):  # an id repeats within the block: line by line finds which
        unmet.update(ids)
        return 0
    _mark_skipped(plan, first, len(ids))
    return len(ids)


def _mark_skipped(plan: Plan, line_no: int, count: int) -> None:
    skip = plan.skip
    end = line_no + count
    if len(skip) < end:
        skip.extend(bytes(end - len(skip) + 1024))
    skip[line_no:end] = bytes([_SKIP]) * count
    plan.skipped += count


def _done_id(raw: bytes, line_no: int, done: set[str]) -> str | None:
    """The line's custom_id if the output already holds it done: found without validating the line."""
    first = LEADING_ID.match(raw)  # Batch API files put custom_id first: no need to parse the line
    if first is not None:
        custom_id = first.group(1).decode("utf-8", "replace")
        return custom_id if custom_id in done else None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    custom_id = data.get("custom_id", derived_id(line_no))
    return custom_id if isinstance(custom_id, str) and custom_id in done else None


def _duplicate_ids(path: Path, display: str, settings: RunSettings, shared: set[int]) -> list[str]:
    """The lines whose custom_id repeats an earlier line's, among the ids whose hash is in `shared`."""
    seen: dict[str, int] = {}
    duplicates: list[str] = []
    for line_no, raw in iter_raw_lines(path):
        item = parse_line(raw, line_no, settings.defaults)
        if hash(item.custom_id) not in shared:
            continue
        first = seen.setdefault(item.custom_id, line_no)
        if first != line_no:
            duplicates.append(f"{display}:{line_no}: custom_id: {item.custom_id!r} is also on line {first}")
    return duplicates


def describe_invalid(plan: Plan) -> str:
    """The invalid lines of a plan, one per line, for a person."""
    lines = [bad.describe(plan.display) for bad in plan.invalid]
    if plan.invalid_count > len(plan.invalid):
        lines.append(f"(and {plan.invalid_count - len(plan.invalid)} more invalid lines)")
    return "\n".join(lines)


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
        self._limiter = RateLimiter(settings.rpm, settings.tpm, settings.burst_seconds, auto=settings.adapt != "off")
        self._slots = ConcurrencyGate(settings.concurrency)
        self._aimd = AimdController(self._slots, settings.concurrency) if settings.adapt == "on" else None
        self._estimator = PromptEstimator()
        self._stop_reason: str | None = None
        self._stopping = False
        self._exit_code = ExitCode.OK
        self._dispatch_scope: anyio.CancelScope | None = None
        self._workers_scope: anyio.CancelScope | None = None
        self._task_group: Any = None
        self._line_prefix = "batch_req_" + os.urandom(6).hex()
        self._line_seq = 0

    @property
    def headers_seen(self) -> bool | None:
        """Whether the server sent x-ratelimit headers (None: no answer yet)."""
        return self._limiter.headers_seen

    async def run(self) -> Summary:
        """Prepare, run every request, and return the summary."""
        with ExitStack() as stack:
            stack.enter_context(_collector_paused())
            path, display = open_input(self.settings.input, stack)
            output = self.settings.output_path()
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
            writer = ResultWriter(output)
            writer.open()
            stack.callback(writer.close)
            progress = Progress(self.counters, self.settings.progress, self.settings.log_interval)
            try:
                if plan.to_run:  # else all done: no connection to open (nor aiohttp to import)
                    await self._execute(plan, writer, progress)
            except* OutputWriteError as group:
                self._exit_code = ExitCode.OUTPUT
                self._stop_reason = str(group.exceptions[0])
                self._echo(f"batchchat: error: {self._stop_reason}; stopped (a rerun resumes)")
            finally:
                progress.close()
            writer.close()
            if plan.retried_ids and self._exit_code != ExitCode.OUTPUT:
                compact(output, plan.retried_ids)
            return self._summary(display, output)

    def _check_plan(self, plan: Plan) -> None:
        if plan.invalid_count and (self.settings.strict or plan.valid == 0):
            why = "--strict is set" if self.settings.strict else "no line is valid"
            raise UsageError(f"{plan.invalid_count:,} invalid lines ({why}); nothing was sent:\n"
                             + describe_invalid(plan))
        if plan.invalid_count:
            self._echo(f"batchchat: {plan.invalid_count:,} invalid lines will get an error line in the output:\n"
                       + describe_invalid(plan))

    def _summary(self, display: str, output: Path) -> Summary:
        code = self._exit_code
        if code == ExitCode.OK and (self.counters.failed or self.counters.done < self.counters.total):
            code = ExitCode.FAILURES
        summary = Summary.from_counters(self.counters, display, str(output), int(code), self._stop_reason)
        if self.settings.summary_json:
            try:
                self.settings.summary_json.write_bytes(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
            except OSError as exc:
                self._echo(f"batchchat: cannot write summary {self.settings.summary_json}: {exc.strerror}")
        return summary

    # -- the stages ------------------------------------------------------------------------------------

    async def _execute(self, plan: Plan, writer: ResultWriter, progress: Progress) -> None:
        buffer = max(256, self.settings.concurrency * 2)
        send, receive = anyio.create_memory_object_stream[Result](buffer)
        writer_done = anyio.Event()
        sender = open_sender(self.settings.endpoint, self.settings.concurrency, self._redact, self._client)
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                tg.start_soon(self._write_loop, receive, writer, writer_done)
                tg.start_soon(progress.run)
                tg.start_soon(_collect_garbage)
                if self.settings.handle_signals:
                    tg.start_soon(self._watch_signals)
                try:
                    async with anyio.create_task_group() as workers:
                        self._workers_scope = workers.cancel_scope
                        pool = _WorkerPool(workers, lambda work: self._work(*work, sender, send))
                        self._dispatch_scope = anyio.CancelScope()
                        with self._dispatch_scope:
                            await self._dispatch(plan, pool, send)
                        pool.close()  # the workers finish what they hold, then end
                finally:
                    send.close()
                with anyio.CancelScope(shield=True):
                    await writer_done.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await sender.aclose()

    async def _dispatch(self, plan: Plan, pool: _WorkerPool, results: Any) -> None:
        settings = self.settings
        skip = plan.skip
        for line_no, raw in iter_raw_lines(plan.path):
            if line_no > plan.last_line:
                break  # the rest is done already
            if line_no < len(skip) and skip[line_no]:
                continue
            item = parse_line(raw, line_no, settings.defaults)
            if isinstance(item, InvalidLine):
                await _hand_over(results, Result(item.custom_id, line_no, error_code="invalid_request",
                                                 error_message=item.describe(plan.display)))
                continue
            prompt = self._estimator.estimate(item)
            cost = prompt + completion_cap(item)
            if settings.tpm and cost > settings.tpm:
                await _hand_over(results, Result(
                    item.custom_id, line_no, error_code="request_too_large", metadata=item.metadata,
                    error_message=f"the request is estimated at {cost:,} tokens (prompt + max_tokens x n), "
                                  f"more than the whole --tpm budget of {settings.tpm:,.0f}"))
                continue
            await self._slots.acquire()
            self.counters.in_flight += 1
            admitted = False
            try:
                await self._limiter.acquire(cost)
                admitted = not self._stopping  # a cancel can miss a task woken in the same loop turn as the stop
            finally:
                if not admitted:
                    self._slots.release()
                    self.counters.in_flight -= 1
            if not admitted:
                return
            pool.submit((item, prompt, cost))

    async def _work(self, job: Job, prompt: int, cost: int, sender: Sender, results: Any) -> None:
        started = time.monotonic()
        content = orjson.dumps(job.body)
        attempts = 0
        handed = False

        async def attempt() -> Outcome:
            nonlocal attempts
            if attempts:
                self.counters.retries += 1
                await self._limiter.acquire(cost)
            attempts += 1
            self.counters.attempts += 1
            sent_at = time.monotonic()
            outcome = await sender.send(job.url, content)
            self._observe(outcome, time.monotonic() - sent_at)
            if isinstance(outcome, Retryable) and outcome.status == 429:
                self.counters.rate_limited += 1
                wait = outcome.retry_after if outcome.retry_after is not None else DEFAULT_429_COOLDOWN
                self._limiter.pause(min(wait, self.settings.retry.max_wait))
            return outcome

        try:
            outcome = await attempt()
            if isinstance(outcome, Retryable):
                outcome = await retry_after_failure(outcome, attempt, self.settings.retry,
                                                    time.monotonic() - started)
            if isinstance(outcome, Fatal):
                self._fatal(outcome)
                return
            result = self._result(job, outcome, attempts, time.monotonic() - started, prompt)
            # the slot goes with the result and is freed once it is on disk: at most --concurrency answers
            # are ever paid for and not yet written, which bounds what a crash can lose
            result.holds_slot = True
            handed = await _hand_over(results, result)
        finally:
            if not handed:
                self._slots.release()
                self.counters.in_flight -= 1

    def _result(self, job: Job, outcome: Outcome, attempts: int, latency: float, prompt: int) -> Result:
        if isinstance(outcome, Success):
            usage = outcome.body.get("usage")
            real_prompt = charged_tokens(usage)
            if real_prompt is not None:
                self._limiter.settle(real_prompt - prompt)
                self._estimator.learn(job, real_prompt)
                self.counters.estimated_prompt_tokens += prompt
                self.counters.estimated_prompt_actual += real_prompt
            return Result(job.custom_id, job.line_no, outcome.status, outcome.raw, outcome.request_id,
                          attempts=attempts, latency=latency, usage=usage if isinstance(usage, dict) else None,
                          metadata=job.metadata)
        assert not isinstance(outcome, Fatal)
        message = outcome.message
        if isinstance(outcome, Retryable):
            message = f"gave up after {attempts} attempts: {message}"
        return Result(job.custom_id, job.line_no, outcome.status, outcome.raw, outcome.request_id,
                      error_code=outcome.reason, error_message=message, attempts=attempts, latency=latency,
                      metadata=job.metadata)

    async def _write_loop(self, receive: Any, writer: ResultWriter, done: anyio.Event) -> None:
        try:
            async with receive:
                async for first in receive:
                    batch = [first]
                    while len(batch) < 1024:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    data = b"".join([encode_result(r, self._next_line_id()) for r in batch])
                    writer.write(data, time.monotonic())
                    for result in batch:
                        self._count(result)
                        if result.holds_slot:
                            self._slots.release()
                            self.counters.in_flight -= 1
        except OutputWriteError:
            self._stop("", grace=None)
            raise
        finally:
            done.set()

    def _count(self, result: Result) -> None:
        counters = self.counters
        if result.ok:
            counters.succeeded += 1
            prompt, completion = usage_totals(result.usage)
            counters.prompt_tokens += prompt
            counters.completion_tokens += completion
            counters.latencies.add(result.latency)
        else:
            counters.failed += 1
            counters.errors[result.error_code or "error"] += 1
        if self._on_result is not None:
            self._on_result(orjson.loads(encode_result(result, "")))

    def _observe(self, outcome: Outcome, latency: float) -> None:
        """Feed one answer to the limiter (rate-limit headers) and to the concurrency controller."""
        answered = isinstance(outcome, Success | Retryable) and outcome.status is not None
        headers = outcome.headers if answered else None  # type: ignore[union-attr]
        self._limiter.observe(outcome.status if answered else None,  # type: ignore[union-attr]
                              RateLimitHeaders.parse(headers) if headers is not None else None)
        if self._aimd is None:
            if self.settings.adapt != "auto" or self._limiter.headers_seen is not False:
                return
            if self.settings.rpm or self.settings.tpm:
                return
            self._aimd = AimdController(self._slots, self.settings.concurrency)  # a server with no limits
        if isinstance(outcome, Success):
            self._aimd.on_success(latency)
        elif isinstance(outcome, Retryable) and (outcome.status in (429, 503) or outcome.reason == "timeout"):
            self._aimd.on_overload()

    def _next_line_id(self) -> str:
        self._line_seq += 1
        return f"{self._line_prefix}{self._line_seq:08x}"

    # -- stopping --------------------------------------------------------------------------------------

    def _stop(self, reason: str, grace: float | None) -> None:
        """Stop dispatching now; give in-flight requests `grace` seconds (None: cancel them now)."""
        self._stopping = True
        if self._stop_reason is None and reason:
            self._stop_reason = reason
        if self._dispatch_scope is not None:
            self._dispatch_scope.cancel()
        if self._workers_scope is None:
            return
        if grace is None:
            self._workers_scope.cancel()
        elif self._task_group is not None:
            self._task_group.start_soon(self._cancel_workers_after, grace)

    async def _cancel_workers_after(self, grace: float) -> None:
        await anyio.sleep(grace)
        if self._workers_scope is not None:
            self._workers_scope.cancel()

    def _fatal(self, outcome: Fatal) -> None:
        if self._exit_code != ExitCode.FATAL:
            self._exit_code = ExitCode.FATAL
            self._echo(f"batchchat: stopping: {outcome.message}")
            self._stop(outcome.message, grace=self.settings.grace)

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._exit_code != ExitCode.INTERRUPTED:
                    self._exit_code = ExitCode.INTERRUPTED
                    self._echo(f"batchchat: {name}: stopping; waiting up to {self.settings.grace:g} s for "
                               f"{self.counters.in_flight} requests in flight (again to stop at once)")
                    self._stop(f"interrupted by {name}; rerun the same command to resume", self.settings.grace)
                else:
                    self._echo(f"batchchat: {name} again: stopping now")
                    self._stop("", grace=None)


async def _collect_garbage() -> None:
    """Collect cyclic garbage every GARBAGE_PERIOD seconds, as the paused collector would have (see below)."""
    import gc

    while True:
        await anyio.sleep(GARBAGE_PERIOD)
        gc.collect()


async def _hand_over(results: Any, result: Result) -> bool:
    """Give a result to the writer; shielded, so a result that was paid for is not dropped by a cancel."""
    # a BrokenResourceError means the writer has failed: the run is stopping and the result cannot be recorded
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        try:
            results.send_nowait(result)  # the usual case: room in the buffer, nothing to wait for or shield
            return True
        except anyio.WouldBlock:
            pass
        with anyio.CancelScope(shield=True):
            await results.send(result)
            return True
    return False


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Turn off automatic collection of cyclic garbage for a run (the engine collects every GARBAGE_PERIOD s).

    With thousands of requests in flight, every automatic collection traversed each live request's objects
    again: at 4,000 in flight the collector took 3-7 s of a 10 s run (a full collection 200 ms), though it
    freed almost nothing (a run makes ~1,300 cyclic objects in 20,000 requests). Objects alive before the run
    (imports, the resume index) are frozen out of collections altogether. Runs that overlap in one process
    (two `arun`s in one loop) pause it once: the first in saves its state, the last out restores it.
    """
    import gc

    if not _collector_state:
        _collector_state.append(gc.isenabled())
        gc.freeze()
        gc.disable()
    _collector_state.append(None)
    try:
        yield
    finally:
        _collector_state.pop()
        if len(_collector_state) == 1:
            gc.unfreeze()
            if _collector_state.pop():
                gc.enable()


_collector_state: list[Any] = []  # whether the collector was on, then one entry per run in progress


class _WorkerPool:
    """Long-lived worker tasks fed from a queue, started only as more requests are in flight than workers idle.

    A task per request costs ~20 µs in anyio (a task, a cancel scope and an event each); a queue hand-off ~1.5.
    Workers run in the caller's task group, so its cancel scope still stops them.
    """

    def __init__(self, group: Any, work: Callable[[Any], Any]) -> None:
        import asyncio

        self._group = group
        self._work = work
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._idle = 0  # workers waiting on the queue with nothing yet handed to them
        self._started = 0

    def submit(self, work: Any) -> None:
        """Hand `work` to an idle worker, starting one if none is idle."""
        if self._idle:
            self._idle -= 1
        else:
            self._started += 1
            self._group.start_soon(self._worker)
        self._queue.put_nowait(work)

    def close(self) -> None:
        """Let every worker end once the queue ahead of it is done."""
        for _ in range(self._started):
            self._queue.put_nowait(None)

    async def _worker(self) -> None:
        queue = self._queue
        while (work := await queue.get()) is not None:
            await self._work(work)
            self._idle += 1
