"""The resume index: what an existing output already holds (ids done, ids that failed), with a torn last line
left by a crash repaired."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from batchchat.errors import UsageError
from batchchat.input.reader import iter_blocks

# The start of a line as encode_result writes it: the custom_id, and whether the error is null.
_HEAD = re.compile(rb'\{"id":"[^"\\]*","custom_id":("(?:[^"\\]|\\.)*"),"error":(null|\{)')
# The same for a plain id (no escapes), matched against every line of a block whole: one item per line,
# the id (and whether the error is null) or empty for a line of another shape.
_PLAIN = rb'\{"id":"[^"\\\n]*","custom_id":"([^"\\\n]*)","error":'
_OK_PER_LINE = re.compile(_PLAIN + rb"null[^\n]*\n|[^\n]*\n")
_HEAD_PER_LINE = re.compile(_PLAIN + rb"(null|\{)[^\n]*\n|[^\n]*\n")


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
    for block in iter_blocks(path, max_line=None):  # an answer (embeddings) may be larger than an input line
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


