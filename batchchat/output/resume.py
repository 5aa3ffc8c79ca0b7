"""The resume index: what an existing output already holds (ids done and the fingerprint of the request each
answered, ids that failed), with a torn last line left by a crash repaired."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import orjson

from batchchat.errors import UsageError
from batchchat.input.reader import iter_blocks
from batchchat.output.ids import IdIndex, IdIndexBuilder

# The start of a line as encode_result writes it: the custom_id, whether the error is null, the fingerprint of
# the request and the hash of its input line (lines written before they existed have none).
_FINGERPRINT = rb'(?:,"fingerprint":"([0-9a-f]{16})"(?:,"line_hash":"([0-9a-f]{16})")?)?'
_HEAD = re.compile(rb'\{"id":"[^"\\]*","custom_id":("(?:[^"\\]|\\.)*"),"error":(null|\{)' + _FINGERPRINT)
# The same for a plain id (no escapes), matched against every line of a block whole: one item per line, the id,
# whether the error is null and the fingerprint, or all empty for a line of another shape.
_PLAIN = rb'\{"id":"[^"\\\n]*","custom_id":"([^"\\\n]*)","error":'
_HEAD_PER_LINE = re.compile(_PLAIN + rb"(null|\{)" + _FINGERPRINT + rb"[^\n]*\n|[^\n]*\n")


@dataclass(slots=True)
class ResumeIndex:
    """What an existing output already holds: ids done (with the fingerprint of the request each answered), ids
    that failed and never succeeded, and any repair made. Ids are held as 128-bit hashes (see `output.ids`)."""

    done: IdIndex = field(default_factory=IdIndex)
    failed: IdIndex = field(default_factory=IdIndex)
    lines: int = 0
    repair: str | None = None

    @classmethod
    def of(cls, done: Iterable[str] = (), failed: Iterable[str] = (),
           fingerprints: dict[str, str] | None = None, line_hashes: dict[str, int] | None = None) -> ResumeIndex:
        """An index from ids given (tests, small sets); `fingerprints` maps ids to their 16 hex digits."""
        numbers = {k: int(v, 16) for k, v in (fingerprints or {}).items()}
        done = list(done)
        return cls(IdIndex.of(done, numbers, line_hashes), IdIndex.of(set(failed) - set(done)))


class _Reading:
    """The ids met while reading an output, in file order, until `finish` builds the index."""

    def __init__(self) -> None:
        self.done = IdIndexBuilder()
        self.failed = IdIndexBuilder()
        self.lines = 0

    def record(self, custom_id: str, ok: bool, fingerprint: bytes | str | None,
               line_hash: bytes | str | None = None) -> None:
        if not isinstance(custom_id, str):  # no input line can have it: nothing to skip or retry
            return
        if ok:
            self.done.add(custom_id, int(fingerprint, 16) if fingerprint else 0, int(line_hash, 16) if line_hash else 0)
        else:
            self.failed.add(custom_id)

    def finish(self, repair: str | None) -> ResumeIndex:
        done = self.done.build()
        self.done = IdIndexBuilder()
        failed = self.failed.build().without(done)  # an id that failed once and succeeded later is done
        return ResumeIndex(done, failed, self.lines, repair)


def load_resume_index(path: Path) -> ResumeIndex:
    """Read an existing output: which ids succeeded (and for which request) or failed. Repairs a torn last line
    left by a crash.

    Lines in batchchat's own key order are read by their head alone, a block of lines at a time; any other
    line is parsed whole, and a complete line that is not a result refuses the output.
    """
    if not path.exists():
        return ResumeIndex()
    reading = _Reading()
    repair = None
    size = path.stat().st_size
    good_end = 0
    line_no = 0
    tail = b""
    for block in iter_blocks(path, max_line=None):  # an answer (embeddings) may be larger than an input line
        if not block.endswith(b"\n"):  # the last line has no newline: whole JSON (keep it) or torn (cut it)
            tail = block
            break
        lines = _index_block(reading, block)
        if lines:
            line_no += lines
        else:
            for raw in block.splitlines(keepends=True):
                line_no += 1
                _index_line(reading, path, line_no, raw)
        good_end += len(block)
    if tail:
        try:
            parsed = orjson.loads(tail)
            reading.record(parsed["custom_id"], parsed["error"] is None, *_fingerprints_of(parsed))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
        else:
            reading.lines += 1
            good_end += len(tail)
            repair = f"{path}: added the missing newline after the last line"
    if repair and good_end == size:
        _append_newline(path)
    elif good_end < size:
        with path.open("r+b") as handle:
            handle.truncate(good_end)
        repair = f"{path}: removed a torn last line ({size - good_end} bytes) left by an interrupted run"
    return reading.finish(repair)


def _index_block(reading: _Reading, block: bytes) -> int:
    """Index a block of whole lines in one go if every line starts with a plain head: the number of lines it
    holds, or 0 (nothing recorded, for the line by line path)."""
    if b"\r" in block:  # a line break of its own to splitlines: the line by line path counts lines as before
        return 0
    heads = _HEAD_PER_LINE.findall(block)
    ids, kinds, fingerprints, line_hashes = zip(*heads, strict=True) if heads else ((), (), (), ())
    if b"" in kinds:  # a line of another shape or an escaped id
        return 0
    try:  # every id valid UTF-8 (a newline cannot complete another id's character)
        b"\n".join(ids).decode()
    except UnicodeDecodeError:
        return 0
    if b"{" in kinds:  # failures among them
        done = [i for i, kind in enumerate(kinds) if kind == b"null"]
        reading.failed.add_encoded([head[0] for head in heads if head[1] != b"null"])
        ids, fingerprints, line_hashes = ([column[i] for i in done] for column in (ids, fingerprints, line_hashes))
    reading.done.add_encoded(list(ids), _numbers(fingerprints), _numbers(line_hashes))
    reading.lines += len(heads)
    return len(heads)


def _numbers(column: Sequence[bytes]) -> list[int]:
    """Hex digits as numbers (b"": none recorded, 0)."""
    if b"" in column:
        return [int(digits, 16) if digits else 0 for digits in column]
    return list(map(int, column, repeat(16)))


def _index_line(reading: _Reading, path: Path, line_no: int, raw: bytes) -> None:
    head = _HEAD.match(raw)
    try:
        if head is not None:  # our own key order: the head says it all
            literal = head.group(1)
            custom_id = orjson.loads(literal) if b"\\" in literal else literal[1:-1].decode()
            reading.record(custom_id, head.group(2) == b"null", head.group(3), head.group(4))
        else:
            parsed = orjson.loads(raw)
            reading.record(parsed["custom_id"], parsed["error"] is None, *_fingerprints_of(parsed))
    except (orjson.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, ValueError):
        raise UsageError(
            f"{path}:{line_no}: not a batchchat result line; refusing to append to this output (choose another -o)"
        ) from None
    reading.lines += 1


def _fingerprints_of(parsed: dict) -> tuple[str | None, str | None]:
    """The fingerprint and line hash of a line parsed whole (None: not recorded); ValueError when malformed."""
    found: list[str | None] = []
    for name in ("fingerprint", "line_hash"):
        value = parsed.get(name)
        if value is not None:
            if not isinstance(value, str) or len(value) != 16:
                raise ValueError(f"not a {name}")
            int(value, 16)
        found.append(value)
    return found[0], found[1]


def _append_newline(path: Path) -> None:
    with path.open("ab") as handle:
        handle.write(b"\n")


