"""The run lock: one run at a time on one output (cron overlap is refused)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from batchchat.errors import OutputLockedError, UsageError


class RunLock:
    """An exclusive lock beside the output (`OUTPUT.lock`); the kernel drops it when the process dies."""

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(output.name + ".lock")
        self._fd = -1

    def acquire(self) -> None:
        """Take the lock or raise `OutputLockedError` naming the holder."""
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot create lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = -1
            raise OutputLockedError(
                f"another batchchat run (pid {holder}) is writing {self.path.with_suffix('')}; "
                "refusing to start a second one on the same output"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Drop the lock."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
