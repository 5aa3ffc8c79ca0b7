"""The run lock: one run at a time on one output (cron overlap is refused)."""

from __future__ import annotations

import contextlib
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
        """Take the lock or raise `OutputLockedError` naming the holder.

        A lock file left by a killed run is locked by no one and is taken over. A run that ends removes its
        lock file while still holding it, so a second process may have opened the old file just before: after
        locking, the path must still name the file locked, or the lock is worthless and is taken again.
        """
        while True:
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
            if self._names_locked_file():
                break
            os.close(self._fd)  # the file was removed (or replaced) by the run that held it: lock the new one
            self._fd = -1
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Remove the lock file (while still holding the lock, so no one else's file is removed), then drop it."""
        if self._fd >= 0:
            if self._names_locked_file():
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def _names_locked_file(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        locked = os.fstat(self._fd)
        return (st.st_dev, st.st_ino) == (locked.st_dev, locked.st_ino)
