"""The writer: appends whole result lines to the output; the only code that touches the file during a run."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

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


