"""Compaction: after a rerun retried failed ids, keep one line per id (the last), crash-safely."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson

from batchchat.errors import OutputWriteError


def compact(path: Path, retried: set[str]) -> int:
    """Keep only the last line of each id in `retried`; returns the number of lines removed.

    Earlier runs' lines for ids that were tried again are superseded; the output then holds one line per id.
    The file is rewritten beside itself (`OUTPUT.compact`, with the output's file mode), synced, renamed over
    the output and the directory synced, so a crash leaves the old file or the new one whole. Any OSError (a
    full disk) removes `OUTPUT.compact`, leaves the output as it was, and raises `OutputWriteError`.
    """
    if not retried:
        return 0
    tmp = path.with_name(path.name + ".compact")
    try:
        return _compact(path, retried, tmp)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else exc.strerror
        raise OutputWriteError(f"cannot compact {path} (it is left as it was; a rerun compacts it): "
                               f"{reason}") from None


def _compact(path: Path, retried: set[str], tmp: Path) -> int:
    remaining: dict[str, int] = {}
    for custom_id in _ids(path):
        if custom_id in retried:
            remaining[custom_id] = remaining.get(custom_id, 0) + 1
    if all(count <= 1 for count in remaining.values()):
        return 0
    removed = 0
    mode = stat.S_IMODE(os.stat(path).st_mode)
    with path.open("rb") as src, tmp.open("wb") as dst:
        os.fchmod(dst.fileno(), mode)
        for raw in src:
            custom_id = orjson.loads(raw)["custom_id"]
            if custom_id in remaining:
                remaining[custom_id] -= 1
                if remaining[custom_id] > 0:
                    removed += 1
                    continue
            dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    _sync_directory(path.parent)
    return removed


def _sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory if str(directory) else ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ids(path: Path) -> Iterator[str]:
    with path.open("rb") as handle:
        for raw in handle:
            yield orjson.loads(raw)["custom_id"]
