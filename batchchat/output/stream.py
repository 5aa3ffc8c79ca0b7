"""`-o -`: result lines streamed to standard output, for a pipe (`batchchat run job.jsonl -o - | jq ...`).

Standard output keeps nothing to resume from, so a streamed run takes no lock, reads no earlier output and
sends every line; the summary and the logs go to standard error.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from batchchat.errors import OutputWriteError

STDOUT = Path("-")


def is_stdout(path: Path) -> bool:
    """Whether `path` is `-`: results to standard output."""
    return path == STDOUT


class StdoutWriter:
    """Writes whole result lines to standard output (file descriptor 1), unbuffered; same face as `ResultWriter`."""

    def __init__(self, fd: int = 1) -> None:
        self.path = STDOUT
        self._fd = fd

    def open(self) -> None:
        """Flush Python's own stdout buffer, so that nothing printed before comes after the results."""
        sys.stdout.flush()

    def write(self, data: bytes, now: float) -> None:
        """Write `data` (whole lines) completely, or raise `OutputWriteError` (a closed pipe, a full disk)."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            why = "its reader closed the pipe" if exc.errno == errno.EPIPE else exc.strerror
            raise OutputWriteError(f"cannot write results to standard output: {why}") from None

    def close(self) -> None:
        """Nothing to close: standard output stays open for whoever owns it."""
