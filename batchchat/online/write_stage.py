"""The write stage: the only code that touches the output during a run.

Workers hand results over (`hand_over`); the stage encodes them and gives them, a batch at a time, to one
writer thread of its own, so a slow disk never stalls the event loop's sockets and timers. While one batch is
being written the next one gathers; once a batch is on disk the thread tells the loop (one callback a batch),
and only then are its results counted and their concurrency slots freed.

One long-lived thread fed through a `queue.SimpleQueue`, not `anyio.to_thread.run_sync` per batch: that costs a
capacity limiter, two checkpoints (extra loop turns) and a Condition hand-off each time, about a fifth of a
request's CPU at zero latency, where batches hold one or two results.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from itertools import count
from typing import Any

import anyio
import orjson

from batchchat.errors import ResultCallbackError
from batchchat.output.lines import Result, encode_result
from batchchat.output.writer import ResultWriter, WriterThread
from batchchat.pacing.tokens import usage_totals
from batchchat.report.counters import Counters

BATCH_LINES = 1024  # most results written in one go
GATHER_SECONDS = 0.002  # longest a result waits for others to share its write (unless many are waiting)


class WriteStage:
    """Encodes results into output lines, writes them off the loop, counts them, frees their slots, calls
    `on_result`.

    Its face to the run is that of a memory object send stream (`send_nowait`, `send`, `close`), holding at most
    `buffer` results not yet given to the writer thread; `run()` waits until it is closed and everything handed
    over is on disk, and raises `OutputWriteError` (a write failed) or `ResultCallbackError`.
    """

    def __init__(self, writer: ResultWriter, counters: Counters, release_slot: Callable[[], None],
                 on_result: Callable[[dict[str, Any]], None] | None = None, buffer: int = 256,
                 stored: Callable[[list[Result]], None] | None = None) -> None:
        self._writer = writer
        self._stored = stored  # --cache: RunCache.stored, called in the writer thread once a batch is written
        self._counters = counters
        self._release_slot = release_slot
        self._on_result = on_result
        self._buffer = buffer
        self._line_ids = map(("batch_req_" + os.urandom(6).hex() + "{:08x}").format, count(1))
        self._pending: list[Result] = []  # handed over, not yet with the thread
        self._batch: tuple[list[Result], list[bytes]] | None = None  # with the thread now
        self._closed = False
        self._failure: BaseException | None = None
        self._finished = anyio.Event()  # closed and everything written, or failed
        self._room: asyncio.Future[None] | None = None  # senders waiting for the buffer to drain
        self._flush_at: asyncio.Handle | None = None  # the pending results go to the thread then
        self._flush_soon = False  # ...or at the end of this loop turn
        self._landed: asyncio.Future[None] | None = None  # a cancelled run() waiting for the batch with the thread
        self._thread: WriterThread | None = None

    # -- the send stream's face ------------------------------------------------------------------------

    def send_nowait(self, result: Result) -> None:
        """Take `result` (`anyio.WouldBlock`: the buffer is full; Broken/ClosedResourceError: failed/closed)."""
        if self._failure is not None:
            raise anyio.BrokenResourceError
        if self._closed:
            raise anyio.ClosedResourceError
        if len(self._pending) >= self._buffer:
            raise anyio.WouldBlock
        self._pending.append(result)
        if self._batch is None:
            self._schedule()

    async def send(self, result: Result) -> None:
        """Take `result`, waiting while the buffer is full."""
        while True:
            try:
                self.send_nowait(result)
                return
            except anyio.WouldBlock:
                if self._room is None:
                    self._room = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._room)

    def close(self) -> None:
        """No more results: `run()` returns once those handed over are written."""
        self._closed = True
        if self._batch is None:
            if self._pending:
                self._schedule()
            else:
                self._finish()

    # -- the run ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Wait until the stage is closed and everything handed over is written; raise what made it fail."""
        try:
            await self._finished.wait()
        finally:
            if self._batch is not None:  # cancelled while a batch is with the thread: it lands first (paid answers)
                self._landed = asyncio.get_running_loop().create_future()
                with anyio.CancelScope(shield=True):
                    await self._landed
            if self._thread is not None:
                self._thread.stop()
        if self._failure is not None:
            raise self._failure

    def _schedule(self) -> None:
        """The thread is free and results wait: give them to it at the end of this loop turn once a quarter of
        the requests in flight wait (so those answered together are written together), else `GATHER_SECONDS`
        after the first of them, whichever comes first."""
        if self._flush_soon:
            return
        loop = asyncio.get_running_loop()
        if len(self._pending) >= max(1, self._counters.in_flight // 4) or self._closed:
            self._flush_soon = True
            if self._flush_at is not None:
                self._flush_at.cancel()
                self._flush_at = None
            loop.call_soon(self._flush)
        elif self._flush_at is None:
            self._flush_at = loop.call_later(GATHER_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._batch is None and self._pending:
            self._submit()

    def _submit(self) -> None:
        """Give the pending results (up to `BATCH_LINES`) to the writer thread."""
        batch = self._pending[:BATCH_LINES]
        del self._pending[:BATCH_LINES]
        lines = [encode_result(result, next(self._line_ids)) for result in batch]
        self._batch = (batch, lines)
        if self._thread is None:
            self._thread = WriterThread(self._writer, self._written, self._stored)
        self._thread.write(b"".join(lines), time.monotonic(), batch)
        self._wake_senders()

    def _written(self, error: BaseException | None) -> None:
        """On the loop: the batch with the thread is on disk (or failed)."""
        assert self._batch is not None
        batch, lines = self._batch
        self._batch = None
        if self._landed is not None:  # run() was cancelled: nothing more is counted or written
            self._landed.set_result(None)
            return
        if error is None:
            try:
                for result, line in zip(batch, lines, strict=True):
                    count_result(self._counters, result, self._release_slot)
                    if self._on_result is not None:
                        _call_back(self._on_result, line)
            except ResultCallbackError as exc:
                error = exc
        if error is not None:
            self._failure = error
            self._pending.clear()
            self._finish()
            return
        if self._pending:
            self._schedule()
        elif self._closed:
            self._finish()

    def _finish(self) -> None:
        self._finished.set()
        self._wake_senders()

    def _wake_senders(self) -> None:
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        self._room = None



def count_result(counters: Counters, result: Result, release_slot: Callable[[], None]) -> None:
    """Count a result that is on disk, and free its concurrency slot."""
    if result.cached:
        counters.succeeded += 1
        counters.cached += 1
    elif result.ok:
        counters.succeeded += 1
        prompt, completion = usage_totals(result.usage)
        counters.prompt_tokens += prompt
        counters.completion_tokens += completion
        counters.latencies.add(result.latency)
    else:
        counters.failed += 1
        counters.errors[result.error_code or "error"] += 1
    if result.holds_slot:
        release_slot()
        counters.in_flight -= 1


def _call_back(on_result: Callable[[dict[str, Any]], None], line: bytes) -> None:
    try:
        on_result(orjson.loads(line))
    except Exception as exc:
        raise ResultCallbackError(f"the on_result callback raised {type(exc).__name__}: {exc}") from exc


async def hand_over(results: Any, result: Result) -> bool:
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
