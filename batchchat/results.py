"""The output file: result lines, the writer that appends them, the resume index, and the run lock.

Lines are shaped as OpenAI Batch API output lines (`id`, `custom_id`, `response`, `error`) plus batchchat's
own fields (`usage`, `attempts`, `latency_ms`, `line`, `metadata`), which Batch consumers ignore.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchchat.errors import OutputLockedError, OutputWriteError, UsageError
from batchchat.jobs import iter_blocks

_ERROR_BODY_LIMIT = 4096
# The start of a line as encode_result writes it: the custom_id, and whether the error is null.
_HEAD = re.compile(rb'\{"id":"[^"\\]*","custom_id":("(?:[^"\\]|\\.)*"),"error":(null|\{)')
# The same for a plain id (no escapes), matched against every line of a block whole: one item per line,
# the id (and whether the error is null) or empty for a line of another shape.
_PLAIN = rb'\{"id":"[^"\\\n]*","custom_id":"([^"\\\n]*)","error":'
_OK_PER_LINE = re.compile(_PLAIN + rb"null[^\n]*\n|[^\n]*\n")
_HEAD_PER_LINE = re.compile(_PLAIN + rb"(null|\{)[^\n]*\n|[^\n]*\n")


@dataclass(slots=True)
class Result:
    """What became of one request: the answer (if any), the error (if it failed), and how it went."""

    custom_id: str
    line_no: int
    status: int | None = None
    raw_body: bytes | None = None
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    latency: float = 0.0
    usage: dict[str, Any] | None = None
    metadata: Any = None
    holds_slot: bool = False  # a concurrency slot is freed once this result is written
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.ok = self.error_code is None


def _embed_body(raw: bytes, ok: bool) -> Any:
    """The response body as a JSON value for the output line, without re-encoding it when possible."""
    if ok and b"\n" not in raw:
        return orjson.Fragment(raw)  # already parsed once, so valid JSON: copied as is
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")


def encode_result(result: Result, line_id: str) -> bytes:
    """One output line, newline included."""
    response = None
    if result.status is not None:
        response = {
            "status_code": result.status,
            "request_id": result.request_id,
            "body": _embed_body(result.raw_body, result.ok) if result.raw_body is not None else None,
        }
    error = None if result.ok else {"code": result.error_code, "message": result.error_message}
    # custom_id and error come first, so that a resume reads them without parsing the whole line
    line: dict[str, Any] = {
        "id": line_id,
        "custom_id": result.custom_id,
        "error": error,
        "response": response,
        "usage": result.usage,
        "attempts": result.attempts,
        "latency_ms": round(result.latency * 1000.0, 1),
        "line": result.line_no,
    }
    if result.metadata is not None:
        line["metadata"] = result.metadata
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


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


@dataclass(slots=True)
class ResumeIndex:
    """What an existing output already holds: ids done, ids that failed, and any repair made."""

    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    lines: int = 0
    repair: str | None = None


def load_resume_index(path: Path) -> ResumeIndex:
    """Read an existing output: which ids succeeded or failed. Repairs a torn last line left by a crash.

    Lines in batchchat's own key order are read by their head alone, a block of lines at a time; any other
    line is parsed whole, and a complete line that is not a result refuses the output.
    """
    index = ResumeIndex()
    if not path.exists():
        return index
    size = path.stat().st_size
    good_end = 0
    line_no = 0
    tail = b""
    for block in iter_blocks(path):
        if not block.endswith(b"\n"):  # the last line has no newline: whole JSON (keep it) or torn (cut it)
            tail = block
            break
        lines = _index_block(index, block)
        if lines:
            line_no += lines
        else:
            for raw in block.splitlines(keepends=True):
                line_no += 1
                _index_line(index, path, line_no, raw)
        good_end += len(block)
    if tail:
        try:
            parsed = orjson.loads(tail)
            _record(index, parsed["custom_id"], parsed["error"] is None)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass
        else:
            index.lines += 1
            good_end += len(tail)
            index.repair = f"{path}: added the missing newline after the last line"
    index.failed -= index.done  # an id that failed once and succeeded later is done
    if index.repair and good_end == size:
        _append_newline(path)
    elif good_end < size:
        with path.open("r+b") as handle:
            handle.truncate(good_end)
        index.repair = f"{path}: removed a torn last line ({size - good_end} bytes) left by an interrupted run"
    return index


def _index_block(index: ResumeIndex, block: bytes) -> int:
    """Index a block of whole lines in one go if every line starts with a plain head: the number of lines it
    holds, or 0 (the block left untouched, for the line by line path)."""
    if b"\r" in block:  # a line break of its own to splitlines: the line by line path counts lines as before
        return 0
    ok = _OK_PER_LINE.findall(block)
    failed: list[bytes] = []
    if b"" in ok:  # a line that failed, has another shape, an escaped id or an empty one
        heads = _HEAD_PER_LINE.findall(block)
        if any(not kind for _, kind in heads):
            return 0
        ok = [custom_id for custom_id, kind in heads if kind == b"null"]
        failed = [custom_id for custom_id, kind in heads if kind == b"{"]
    try:
        done_ids, failed_ids = list(map(bytes.decode, ok)), list(map(bytes.decode, failed))
    except UnicodeDecodeError:
        return 0
    index.done.update(done_ids)
    index.failed.update(failed_ids)
    index.lines += len(ok) + len(failed)
    return len(ok) + len(failed)


def _index_line(index: ResumeIndex, path: Path, line_no: int, raw: bytes) -> None:
    head = _HEAD.match(raw)
    try:
        if head is not None:  # our own key order: the head says it all
            literal = head.group(1)
            custom_id = orjson.loads(literal) if b"\\" in literal else literal[1:-1].decode()
            _record(index, custom_id, head.group(2) == b"null")
        else:
            parsed = orjson.loads(raw)
            _record(index, parsed["custom_id"], parsed["error"] is None)
    except (orjson.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise UsageError(
            f"{path}:{line_no}: not a batchchat result line; refusing to append to this output (choose another -o)"
        ) from None
    index.lines += 1


def _record(index: ResumeIndex, custom_id: str, ok: bool) -> None:
    if ok:
        index.done.add(custom_id)
        index.failed.discard(custom_id)
    elif custom_id not in index.done:
        index.failed.add(custom_id)


def _append_newline(path: Path) -> None:
    with path.open("ab") as handle:
        handle.write(b"\n")


def compact(path: Path, retried: set[str]) -> int:
    """Keep only the last line of each id in `retried`; returns the number of lines removed.

    Earlier runs' error lines for ids that were tried again are superseded; the output then holds one line
    per id. The file is rewritten beside itself and renamed over, so a crash here leaves the old one whole.
    """
    if not retried:
        return 0
    remaining: dict[str, int] = {}
    for custom_id in _ids(path):
        if custom_id in retried:
            remaining[custom_id] = remaining.get(custom_id, 0) + 1
    if all(count <= 1 for count in remaining.values()):
        return 0
    removed = 0
    tmp = path.with_name(path.name + ".compact")
    with path.open("rb") as src, tmp.open("wb") as dst:
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
    return removed


def _ids(path: Path) -> Iterator[str]:
    with path.open("rb") as handle:
        for raw in handle:
            yield orjson.loads(raw)["custom_id"]


def iter_results(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the result lines of an output file as dicts (a torn last line is skipped)."""
    with Path(path).open("rb") as handle:
        for raw in handle:
            if raw.endswith(b"\n"):
                yield orjson.loads(raw)


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
