"""Read a JSONL file as raw lines or blocks of whole lines, in bounded memory, without parsing them.

Blank lines, CRLF and a UTF-8 BOM are tolerated. A line longer than `max_line` bytes is never held whole:
its first `max_line + 1` bytes stand for it (enough for the parser to say it is too long), the rest is
skipped, so a multi-GB file without a newline costs one block of memory, not the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

MAX_LINE_BYTES = 8 * 1024 * 1024
BLOCK_BYTES = 1 << 20  # what iter_blocks reads at a time
_BOM = b"\xef\xbb\xbf"
# A line whose first key is a plain custom_id (no escapes): the id can be read without parsing the line. The
# whitespace class leaves out the newline, so that a match never runs past its own line within a block.
_ID_HEAD = rb'\{[ \t\r\f\v]*"custom_id"[ \t\r\f\v]*:[ \t\r\f\v]*"([^"\\\n]*)"'
LEADING_ID = re.compile(_ID_HEAD)
_ID_PER_LINE = re.compile(rb"(?:" + _ID_HEAD + rb")?[^\n]*\n")  # the id, or b"" for a line without one


def iter_blocks(path: Path, max_line: int | None = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The file as blocks of whole lines, about `BLOCK_BYTES` each; every block ends with a newline but the
    last one of a file that does not. A line over `max_line` bytes (None: no bound) is cut to `max_line + 1`."""
    pending: list[bytes] = []  # the start of a line that began in an earlier read
    pending_size = 0
    overlong = False  # the pending line passed max_line: the rest of it is skipped up to its newline
    with path.open("rb") as handle:
        while chunk := handle.read(BLOCK_BYTES):
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                if not overlong:
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if max_line is not None and pending_size > max_line:
                        overlong = True
                        pending = [b"".join(pending)[: max_line + 1]]
                continue
            if pending:
                if overlong:
                    end = chunk.find(b"\n")
                    pending.append(b"\n")
                    pending.append(chunk[end + 1 : cut])
                else:
                    pending.append(chunk[:cut])
                yield b"".join(pending)
                pending.clear()
                pending_size = 0
                overlong = False
            else:
                yield chunk[:cut]
            if cut < len(chunk):
                pending.append(chunk[cut:])
                pending_size = len(chunk) - cut
    if pending:
        yield b"".join(pending)


def block_lines(line_no: int, block: bytes) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a block from `iter_blocks` whose first line is `line_no`, as `(line_no, bytes)`
    without a BOM or line ending."""
    for raw in block.split(b"\n"):
        if line_no == 1 and raw.startswith(_BOM):
            raw = raw[3:]
        raw = raw.rstrip(b"\r")
        if raw.strip():
            yield line_no, raw
        line_no += 1


def iter_raw_lines(path: Path, max_line: int | None = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield `(line_no, bytes)` for every non-blank line, without a BOM or line ending (bounded as above)."""
    first = 1
    for block in iter_blocks(path, max_line):
        yield from block_lines(first, block)
        first += block.count(b"\n")


def leading_ids(block: bytes) -> list[str] | None:
    """The custom_id of every line of `block` (whole lines, each ending with a newline), read without parsing.

    None unless every line starts with a plain one: `{"custom_id": "..."`, not empty, no escapes, valid UTF-8.
    """
    found = _ID_PER_LINE.findall(block)  # one item per line, as the pattern matches every line whole
    if b"" in found:
        return None
    try:
        return list(map(bytes.decode, found))
    except UnicodeDecodeError:
        return None
