"""The write stage: the only task that touches the output during a run.

Workers hand results over a bounded memory stream; the stage writes them in batches (the file work and its
fsync run in a worker thread, so a slow disk never stalls the event loop's sockets and timers; while one
batch is being written the next one gathers), and only then counts them and frees their concurrency slots.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
import orjson

from batchchat.errors import ResultCallbackError
from batchchat.output.lines import Result, encode_result
from batchchat.output.writer import ResultWriter
from batchchat.pacing.tokens import usage_totals
from batchchat.report.counters import Counters

BATCH_LINES = 1024  # most results written in one go


class WriteStage:
    """Encodes results into output lines, writes them, counts them, frees their slots, calls `on_result`."""

    def __init__(self, writer: ResultWriter, counters: Counters, release_slot: Callable[[], None],
                 on_result: Callable[[dict[str, Any]], None] | None = None,
                 stored: Callable[[list[Result]], None] | None = None) -> None:
        self._writer = writer
        self._stored = stored  # --cache: RunCache.stored, called in the worker thread once a batch is written
        self._counters = counters
        self._release_slot = release_slot
        self._on_result = on_result
        self._line_prefix = "batch_req_" + os.urandom(6).hex()
        self._line_seq = 0

    async def run(self, receive: Any) -> None:
        """Write everything received until the stream closes; raise `OutputWriteError` when a write fails."""
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < BATCH_LINES:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                lines = [encode_result(result, self._next_line_id()) for result in batch]
                with anyio.CancelScope(shield=True):  # paid answers: finish writing them whatever happens
                    if self._stored is None:
                        await anyio.to_thread.run_sync(self._writer.write, b"".join(lines), time.monotonic())
                    else:
                        await anyio.to_thread.run_sync(self._write_and_store, b"".join(lines), batch)
                for result, line in zip(batch, lines, strict=True):
                    self._count(result, line)

    def _write_and_store(self, data: bytes, batch: list[Result]) -> None:
        self._writer.write(data, time.monotonic())
        assert self._stored is not None
        self._stored(batch)  # after the lines are written: a cached answer is always in an output first

    def _count(self, result: Result, line: bytes) -> None:
        counters = self._counters
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
            self._release_slot()
            counters.in_flight -= 1
        if self._on_result is not None:
            try:
                self._on_result(orjson.loads(line))
            except Exception as exc:
                raise ResultCallbackError(f"the on_result callback raised {type(exc).__name__}: {exc}") from exc

    def _next_line_id(self) -> str:
        self._line_seq += 1
        return f"{self._line_prefix}{self._line_seq:08x}"


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


