"""The writer: appends whole result lines to the output; the only code that touches the file during a run."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import queue
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchchat.errors import OutputWriteError, UsageError


class ResultWriter:
    """Appends whole lines to the output with unbuffered writes; the only code that touches the file.

    Before each batch it checks that the file is still the one it opened and still writable, so a file
    removed, replaced or made read-only mid-run stops the run instead of writing into the void.
    """

    def __init__(self, path: Path, fsync_interval: float = 1.0) -> None:
        self.path = path
        self._fsync_interval = fsync_interval
        self._fd = -1
        self._ino = 0
        self._last_sync = 0.0

    def open(self) -> None:
        """Open (create) the output for appending."""
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot open output {self.path}: {exc.strerror}") from None
        self._ino = os.fstat(self._fd).st_ino

    def write(self, data: bytes, now: float) -> None:
        """Write `data` (whole lines) completely, or raise `OutputWriteError`."""
        self._check_file()
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if now - self._last_sync >= self._fsync_interval:
                os.fsync(self._fd)
                self._last_sync = now
        except OSError as exc:
            reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else exc.strerror
            raise OutputWriteError(f"cannot write {self.path}: {reason}") from None

    def close(self) -> None:
        """Flush to disk and close."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _check_file(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise OutputWriteError(f"output {self.path} was removed during the run") from None
        if st.st_ino != self._ino:
            raise OutputWriteError(f"output {self.path} was replaced during the run")
        if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise OutputWriteError(f"output {self.path} was made read-only during the run")




class WriterThread:
    """Writes batches with `writer.write` on a thread of its own, one at a time, and calls `written(error)` on
    the event loop it was made on after each (error None: the batch is on disk).

    One long-lived thread fed through a `queue.SimpleQueue`: `anyio.to_thread.run_sync` per batch costs a
    capacity limiter, two checkpoints (extra loop turns) and a Condition hand-off each time.
    """

    def __init__(self, writer: Any, written: Callable[[BaseException | None], None],
                 stored: Callable[[list[Any]], None] | None = None) -> None:
        self._writer = writer
        self._written = written
        self._stored = stored  # called with a batch's results once they are written (--cache), on this thread
        self._loop = asyncio.get_running_loop()
        self._inbox: queue.SimpleQueue[tuple[bytes, float, list[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="batchchat-writer", daemon=True)
        self._thread.start()

    def write(self, data: bytes, now: float, results: list[Any]) -> None:
        """Queue one batch (whole lines, and the results they hold)."""
        self._inbox.put((data, now, results))

    def stop(self) -> None:
        """End the thread once the batches queued are written."""
        self._inbox.put(None)

    def _run(self) -> None:
        while (item := self._inbox.get()) is not None:
            error: BaseException | None = None
            try:
                self._writer.write(item[0], item[1])
                if self._stored is not None:
                    self._stored(item[2])  # after the lines are written: a cached answer is in an output first
            except BaseException as exc:  # OutputWriteError, or anything else the run must hear of
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: the run was torn down
                self._loop.call_soon_threadsafe(self._written, error)
