"""`batchchat merge`: join the outputs of a job's shards (or of any runs of one job) into one output with one
line per id.

Streamed in bounded memory: a first pass keeps only a 64-bit hash per line; only ids whose hash repeats are
looked at again (their winner chosen exactly by id); a last pass copies the winning lines as they are. For an
id found more than once, a success wins over an error, and among equals the last one read (files in the order
given, lines in file order). The result is written beside `out` and renamed over it: a crash leaves either
the old file or the whole new one. A torn last line (a run killed mid-write) is left out and reported.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import orjson

from batchchat.errors import OutputWriteError, UsageError

# The head of a line as batchchat writes it: the custom_id and whether the error is null (as output/resume.py).
_HEAD = re.compile(rb'\{"id":"[^"\\]*","custom_id":("(?:[^"\\]|\\.)*"),"error":(null|\{)')


@dataclass(slots=True)
class MergeReport:
    """What a merge read and wrote."""

    out: Path
    sources: int = 0
    lines_read: int = 0
    written: int = 0
    succeeded: int = 0
    failed: int = 0
    duplicates: int = 0  # lines left out because another line of the same id won
    torn: list[str] = field(default_factory=list)  # "file: N bytes" of torn last lines left out

    def render(self) -> str:
        """One paragraph for a person."""
        text = (f"merged {self.lines_read:,} lines from {self.sources} files into {self.out}: {self.written:,} ids "
                f"({self.succeeded:,} succeeded, {self.failed:,} failed), {self.duplicates:,} repeated lines dropped")
        for torn in self.torn:
            text += f"\nleft out a torn last line: {torn}"
        return text


def _lines(path: Path, torn: list[str] | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its newline) of every non-blank line; a last line without a newline is
    yielded if it is whole JSON (as resume keeps it), else left out (and noted in `torn`)."""
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            elif not _whole(raw):
                if torn is not None:
                    torn.append(f"{path}: {len(raw)} bytes")
                continue
            raw = raw.rstrip(b"\r")
            if raw.strip():
                yield line_no, raw


def _whole(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def _head(path: Path, line_no: int, raw: bytes) -> tuple[str, bool]:
    """(custom_id, succeeded) of a result line; `UsageError` for a line that is not one."""
    head = _HEAD.match(raw)
    try:
        if head is not None:
            literal = head.group(1)
            custom_id = orjson.loads(literal) if b"\\" in literal else literal[1:-1].decode()
            return custom_id, head.group(2) == b"null"
        parsed = orjson.loads(raw)
        custom_id, error = parsed["custom_id"], parsed["error"]
        if not isinstance(custom_id, str):
            raise TypeError
        return custom_id, error is None
    except (orjson.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise UsageError(f"{path}:{line_no}: not a batchchat result line; nothing was written") from None


def merge(out: Path, sources: Sequence[Path]) -> MergeReport:
    """Join `sources` (result files) into `out`, one line per id; returns what was done.

    `out` may be one of the sources (it is read whole before it is replaced). Raises `UsageError` for a missing
    source or a line that is not a result, `OutputWriteError` when `out` cannot be written.
    """
    if not sources:
        raise UsageError("merge needs at least one output file to read")
    for source in sources:
        if not source.is_file():
            raise UsageError(f"{source} does not exist or is not a file")
    report = MergeReport(out, sources=len(sources))
    # pass 1: a hash per line, and which hashes repeat
    hashes = array("q")
    for source in sources:
        _check_not_running(source)
        for line_no, raw in _lines(source, report.torn):
            hashes.append(hash(_head(source, line_no, raw)[0]))
    report.lines_read = len(hashes)
    ordered = sorted(hashes)
    del hashes
    repeated = {a for a, b in pairwise(ordered) if a == b}
    del ordered
    # pass 2: the winner of each id whose hash repeats: (succeeded, position), the highest wins
    winners: dict[str, tuple[bool, int]] = {}
    if repeated:
        position = 0
        for source in sources:
            for line_no, raw in _lines(source):
                custom_id, ok = _head(source, line_no, raw)
                if hash(custom_id) in repeated:
                    best = winners.get(custom_id)
                    if best is None or (ok, position) >= best:
                        winners[custom_id] = (ok, position)
                position += 1
    # pass 3: copy the winning lines, then rename over `out`
    _write(out, sources, repeated, winners, report)
    return report


def _write(out: Path, sources: Sequence[Path], repeated: set[int], winners: dict[str, tuple[bool, int]],
           report: MergeReport) -> None:
    directory = out.parent if str(out.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".merge", dir=directory)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {out}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as dst:
            position = 0
            for source in sources:
                for line_no, raw in _lines(source):
                    custom_id, ok = _head(source, line_no, raw)
                    keep = hash(custom_id) not in repeated or winners[custom_id][1] == position
                    position += 1
                    if not keep:
                        report.duplicates += 1
                        continue
                    dst.write(raw + b"\n")
                    report.written += 1
                    if ok:
                        report.succeeded += 1
                    else:
                        report.failed += 1
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_not_running(path: Path) -> None:
    """Refuse an output that a run is still writing (it holds `OUTPUT.lock`, see output/lock.py)."""
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return  # no lock file: no run has it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        raise UsageError(f"{path} is still being written by a batchchat run (pid {holder}); merge it once that run "
                         "has finished") from None
    finally:
        os.close(fd)
