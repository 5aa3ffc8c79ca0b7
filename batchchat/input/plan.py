"""The pre-scan: read the whole input once before anything is sent, and make the plan of the run.

It validates every line, refuses duplicate ids, counts what is to be sent and estimates its tokens, and marks
the lines an earlier run already finished, so that they are neither read again nor sent. Both paths (online
and Batch API) start from a `Plan`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from batchchat.config.settings import RunSettings
from batchchat.errors import UsageError
from batchchat.input.parse import InvalidLine, derived_id, parse_line
from batchchat.input.reader import LEADING_ID, block_lines, iter_blocks, iter_raw_lines, leading_ids
from batchchat.pacing.tokens import completion_cap, prompt_estimate

_SKIP = 1


@dataclass(slots=True)
class Plan:
    """What the pre-scan of the input found: what to send, what is bad, what is already done."""

    path: Path
    display: str
    skip: bytearray  # by line number: 1 = already done in the output, not read again
    to_run: int = 0
    last_line: int = 0  # the last line with work to do: dispatch stops there
    invalid: list[InvalidLine] = field(default_factory=list)
    invalid_count: int = 0
    valid: int = 0
    skipped: int = 0
    estimated_tokens: int = 0
    retried_ids: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def open_input(spec: str, stack: ExitStack) -> tuple[Path, str]:
    """Resolve the input: a readable regular file, or standard input spooled to a temporary file."""
    if spec == "-":
        fd, name = tempfile.mkstemp(prefix="batchchat-stdin-", suffix=".jsonl")
        stack.callback(os.unlink, name)
        with os.fdopen(fd, "wb") as tmp:
            shutil.copyfileobj(sys.stdin.buffer, tmp)
        return Path(name), "<stdin>"
    path = Path(spec)
    if not path.exists():
        raise UsageError(f"input {spec} does not exist")
    if path.is_dir():
        raise UsageError(f"input {spec} is a directory, not a JSONL file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot read input {spec}: {exc.strerror}") from None
    return path, spec


def scan(path: Path, display: str, settings: RunSettings, done: set[str], failed: set[str]) -> Plan:
    """Read the whole input once: validate every line, find duplicate ids, mark lines already done.

    The input is read a block of lines at a time; a block whose every line starts with a custom_id already
    done is skipped whole, without a look at each line.
    """
    from array import array
    from itertools import pairwise

    plan = Plan(path, display, bytearray())
    # Lines with work to do keep the hash of their id, 8 bytes each, instead of a dict of str ids (~130 MB
    # for a million); ids that share a hash are checked exactly by a second pass, which also words the
    # errors. A done id is met at most once: `unmet` holds those not met yet, so a second meeting is a repeat.
    hashes = array("q")
    unmet = set(done)
    repeated: set[int] = set()
    lines = 0
    first = 1  # the number of the block's first line
    shard = settings.shard
    for block in iter_blocks(path):
        skipped = _skip_block(plan, first, block, unmet) if unmet else 0
        if skipped:
            lines += skipped
            first += skipped
            continue
        for line_no, raw in block_lines(first, block):
            lines += 1
            if shard is not None and not shard.owns(line_no):  # --shard: another shard's line (input/shard.py)
                _mark_skipped(plan, line_no, 1, done=False)
                continue
            custom_id = _done_id(raw, line_no, done) if done else None
            if custom_id is None:
                item = parse_line(raw, line_no, settings.defaults)
                custom_id = item.custom_id
            if custom_id in done:
                if custom_id in unmet:
                    unmet.remove(custom_id)
                else:
                    repeated.add(hash(custom_id))
                _mark_skipped(plan, line_no, 1)
                continue
            hashes.append(hash(custom_id))
            if custom_id in failed:
                plan.retried_ids.add(custom_id)
            plan.to_run += 1
            plan.last_line = line_no
            if isinstance(item, InvalidLine):
                plan.invalid_count += 1
                if len(plan.invalid) < 20:
                    plan.invalid.append(item)
            else:
                plan.valid += 1
                plan.estimated_tokens += prompt_estimate(item) + completion_cap(item)
        first += block.count(b"\n")
    del unmet
    ordered = sorted(hashes)
    del hashes
    shared = {a for a, b in pairwise(ordered) if a == b} | repeated
    del ordered
    duplicates = _duplicate_ids(path, display, settings, shared) if shared else []
    if duplicates:
        more = f"\n(and {len(duplicates) - 10} more)" if len(duplicates) > 10 else ""
        raise UsageError("custom_id must be unique within a file:\n" + "\n".join(duplicates[:10]) + more)
    if not lines:
        raise UsageError(f"{display}: no requests (the file is empty or has only blank lines)")
    return plan


def _skip_block(plan: Plan, first: int, block: bytes, unmet: set[str]) -> int:
    """Skip a whole block at once if every line starts with a plain custom_id, done and not met before: the
    number of lines skipped, or 0 (nothing changed)."""
    ids = leading_ids(block) if block.endswith(b"\n") else None
    if not ids or not unmet.issuperset(ids):
        return 0
    before = len(unmet)
    unmet.difference_update(ids)
    if before - len(unmet) != len(ids):  # an id repeats within the block: line by line finds which
        unmet.update(ids)
        return 0
    _mark_skipped(plan, first, len(ids))
    return len(ids)


def _mark_skipped(plan: Plan, line_no: int, count: int, done: bool = True) -> None:
    """Mark lines not to be sent: done already (counted as skipped), or another shard's (`done` False)."""
    skip = plan.skip
    end = line_no + count
    if len(skip) < end:
        skip.extend(bytes(end - len(skip) + 1024))
    skip[line_no:end] = bytes([_SKIP]) * count
    if done:
        plan.skipped += count


def _done_id(raw: bytes, line_no: int, done: set[str]) -> str | None:
    """The line's custom_id if the output already holds it done: found without validating the line."""
    first = LEADING_ID.match(raw)  # Batch API files put custom_id first: no need to parse the line
    if first is not None:
        custom_id = first.group(1).decode("utf-8", "replace")
        return custom_id if custom_id in done else None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    custom_id = data.get("custom_id", derived_id(line_no))
    return custom_id if isinstance(custom_id, str) and custom_id in done else None


def _duplicate_ids(path: Path, display: str, settings: RunSettings, shared: set[int]) -> list[str]:
    """The lines whose custom_id repeats an earlier line's, among the ids whose hash is in `shared`."""
    seen: dict[str, int] = {}
    duplicates: list[str] = []
    for line_no, raw in iter_raw_lines(path):
        item = parse_line(raw, line_no, settings.defaults)
        if hash(item.custom_id) not in shared:
            continue
        first = seen.setdefault(item.custom_id, line_no)
        if first != line_no:
            duplicates.append(f"{display}:{line_no}: custom_id: {item.custom_id!r} is also on line {first}")
    return duplicates


def describe_invalid(plan: Plan) -> str:
    """The invalid lines of a plan, one per line, for a person."""
    lines = [bad.describe(plan.display) for bad in plan.invalid]
    if plan.invalid_count > len(plan.invalid):
        lines.append(f"(and {plan.invalid_count - len(plan.invalid)} more invalid lines)")
    return "\n".join(lines)
