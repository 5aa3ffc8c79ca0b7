"""The pre-scan: read the whole input once before anything is sent, and make the plan of the run.

It validates every line, refuses duplicate ids, counts what is to be sent and estimates its tokens, and marks
the lines an earlier run already finished, so that they are neither read again nor sent. Both paths (online
and Batch API) start from a `Plan`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from batchchat.config.settings import JobDefaults, RunSettings
from batchchat.errors import UsageError
from batchchat.input.parse import InvalidLine, Job, derived_id, parse_line
from batchchat.input.reader import LEADING_ID, block_lines, iter_blocks, iter_raw_lines, leading_ids
from batchchat.output.ids import IdIndex
from batchchat.output.lines import line_hasher, request_fingerprint
from batchchat.output.resume import ResumeIndex
from batchchat.pacing.tokens import completion_cap, prompt_estimate

_SKIP = 1
# Lanes (`Plan.lanes`, a byte a line): which reader of the online dispatcher sends the line. A model gets a lane
# of its own, so that each model's lines are read at that model's pace whatever the file's order and mix.
NO_LANE, INVALID_LANE, FIRST_MODEL_LANE, OTHERS_LANE = 0, 1, 2, 255


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
    retried_ids: set[str] = field(default_factory=set)  # ids whose earlier lines compaction supersedes
    changed: int = 0  # done ids whose request has changed since (sent again with --resend-changed)
    left: int = 0  # lines with work to do beyond --limit, left for a later run
    notes: list[str] = field(default_factory=list)
    groups: set[tuple[str, str]] = field(default_factory=set)  # (endpoint path, model) of the valid lines to run
    input_sha256: str | None = None  # of the bytes the plan was made from (None: not all of them were read)
    lanes: bytearray = field(default_factory=bytearray)  # by line number: the lane of a line to send (NO_LANE: none)
    models: dict[str, int] = field(default_factory=dict)  # a model's lane
    lanes_used: set[int] = field(default_factory=set)

    def lane_for(self, line_no: int, item: Job | InvalidLine) -> None:
        """Record the lane of a planned line: invalid, its model's own, or the shared one past 253 models."""
        if isinstance(item, InvalidLine):
            lane = INVALID_LANE
        else:
            model = item.body.get("model")
            model = model if isinstance(model, str) else ""  # as pacing.pacer.job_model
            lane = self.models.get(model, NO_LANE)
            if lane == NO_LANE:
                lane = min(FIRST_MODEL_LANE + len(self.models), OTHERS_LANE)
                if lane < OTHERS_LANE:
                    self.models[model] = lane
        lanes = self.lanes
        if len(lanes) <= line_no:
            lanes.extend(bytes(line_no - len(lanes) + 4096))
        lanes[line_no] = lane
        self.lanes_used.add(lane)


def sealed_plan(path: Path, display: str, lines: int, input_sha256: str) -> Plan:
    """The plan of a job its output's seal shows finished (`output.seal`): every one of its lines done."""
    return Plan(path, display, bytearray(), skipped=lines, input_sha256=input_sha256)


def open_input(spec: str, stack: ExitStack, settings: RunSettings | None = None) -> tuple[Path, str]:
    """Resolve the input: a readable regular file, or standard input spooled to a temporary file. With
    `settings`, a CSV, TSV or Parquet input (by `--input-format` or its extension) is spooled as JSONL lines,
    one per row (`input/table_spool.py`); the display name stays the table's."""
    path, display = _open_file(spec, stack)
    fmt = settings.table.format_of(spec) if settings is not None else "jsonl"
    if fmt == "jsonl":
        return path, display
    from batchchat.input.table_spool import spool_table

    assert settings is not None
    return spool_table(path, display, fmt, settings.table, settings.defaults.endpoint, stack), display


def _open_file(spec: str, stack: ExitStack) -> tuple[Path, str]:
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


def scan(path: Path, display: str, settings: RunSettings,
         done: ResumeIndex | IdIndex | Iterable[str] | None = None, failed: IdIndex | Iterable[str] | None = None,
         *, resend_changed: bool = False, limit: int | None = None) -> Plan:
    """Read the whole input once: validate every line, find duplicate ids, mark lines already done.

    A line whose id the output holds done is skipped, unless its request (endpoint and body after defaults) no
    longer has the fingerprint recorded with the answer: such a changed line refuses the run (`UsageError`
    naming how many changed and what to do), or with `resend_changed` is sent again, its old line superseded
    by compaction. An answer recorded without a fingerprint (older outputs) counts as matching. `done` is a
    `ResumeIndex`, or the done ids (`IdIndex` or str) with `failed` beside. With `limit`,
    only the first `limit` lines with work to do are planned; `Plan.left` counts the others.

    A done line whose bytes (and the run's defaults) hash as recorded with its answer is unchanged without being
    parsed. The input is read a block of lines at a time; a block whose every line starts with a custom_id done
    and unchanged that way (or done without a fingerprint) is skipped whole, without parsing a line.
    """
    from array import array
    from itertools import pairwise

    done, failed = _ids_index(done, failed)
    plan = Plan(path, display, bytearray())
    # Lines with work to do keep the hash of their id, 8 bytes each, instead of a dict of str ids (~130 MB
    # for a million), in 256 buckets; ids that share a hash are checked exactly by a second pass, which also words the
    # errors. A done id is met at most once: `met` flags those met, so a second meeting is a repeat.
    hashes = [array("q") for _ in range(256)]  # by the hash's low byte: sorted a bucket at a time, not whole
    met = bytearray(len(done))
    repeated: set[int] = set()
    changed: list[tuple[int, str]] = []
    lines = 0
    first = 1  # the number of the block's first line
    shard = settings.shard
    line_hash = line_hasher(settings.defaults)
    digest, read = hashlib.sha256(), 0  # of the bytes read: a finished job's output is sealed with it
    for block in iter_blocks(path):
        digest.update(block)
        read += len(block)
        skipped = _skip_block(plan, first, block, done, met, line_hash) if len(done) else 0
        if skipped:
            lines += skipped
            first += skipped
            continue
        for line_no, raw in block_lines(first, block):
            lines += 1
            if shard is not None and not shard.owns(line_no):  # --shard: another shard's line (input/shard.py)
                _mark_skipped(plan, line_no, 1, done=False)
                continue
            item: Job | InvalidLine | None = None
            resent = False
            position = -1
            recorded = recorded_line = 0
            if len(done):
                custom_id = _line_id(raw, line_no)  # found without validating the line
                found = done.lookup(custom_id) if custom_id is not None else None
                if found is None:
                    item = parse_line(raw, line_no, settings.defaults)
                    if item.custom_id != custom_id:  # an id only parsing finds (an invalid line's derived one)
                        custom_id = item.custom_id
                        found = done.lookup(custom_id)
                if found is not None:
                    position, recorded, recorded_line = found
            if position >= 0:
                if recorded and recorded_line and item is None and line_hash(raw) == recorded_line:
                    recorded = 0  # the very line answered, under the same defaults: unchanged
                if recorded and item is None:
                    item = parse_line(raw, line_no, settings.defaults)
                if met[position]:
                    repeated.add(hash(custom_id))
                met[position] = 1
                if not recorded or _fingerprint(item) == recorded:
                    _mark_skipped(plan, line_no, 1)
                    continue
                plan.changed += 1
                if len(changed) < 3:
                    changed.append((line_no, custom_id))
                if not resend_changed:
                    continue
                resent = True
            if item is None:
                item = parse_line(raw, line_no, settings.defaults)
            custom_id = item.custom_id
            key = hash(custom_id)
            hashes[key & 255].append(key)
            if limit is not None and plan.to_run >= limit:
                plan.left += 1
                continue
            if resent or custom_id in failed:  # its earlier line is superseded once the new one is written
                plan.retried_ids.add(custom_id)
            plan.to_run += 1
            plan.last_line = line_no
            plan.lane_for(line_no, item)
            if isinstance(item, InvalidLine):
                plan.invalid_count += 1
                if len(plan.invalid) < 20:
                    plan.invalid.append(item)
            else:
                plan.valid += 1
                plan.estimated_tokens += prompt_estimate(item) + completion_cap(item)
                model = item.body.get("model")
                plan.groups.add((item.url, model if isinstance(model, str) else ""))
        first += block.count(b"\n")
    del met
    shared = repeated
    for k, bucket in enumerate(hashes):  # a million hashes sorted whole were a list of 40 MB
        hashes[k] = array("q")
        shared.update(a for a, b in pairwise(sorted(bucket)) if a == b)
    del hashes
    duplicates = _duplicate_ids(path, display, settings, shared) if shared else []
    if duplicates:
        more = f"\n(and {len(duplicates) - 10} more)" if len(duplicates) > 10 else ""
        raise UsageError("custom_id must be unique within a file:\n" + "\n".join(duplicates[:10]) + more)
    if not lines:
        raise UsageError(f"{display}: no requests (the file is empty or has only blank lines)")
    if plan.changed and not resend_changed:
        raise UsageError(_changed_message(display, settings, plan.changed, changed))
    if read == path.stat().st_size:  # else a line too long was cut: its bytes were not all read
        plan.input_sha256 = digest.hexdigest()
    return plan


def _ids_index(done: ResumeIndex | IdIndex | Iterable[str] | None,
               failed: IdIndex | Iterable[str] | None) -> tuple[IdIndex, IdIndex]:
    """What is done and failed, as `scan` takes it: a `ResumeIndex`, or the two (indexes, or ids as str)."""
    if isinstance(done, ResumeIndex):
        return done.done, done.failed
    if not isinstance(done, IdIndex):
        done = IdIndex.of(done or ())
    if not isinstance(failed, IdIndex):
        failed = IdIndex.of(failed or ())
    return done, failed


def _changed_message(display: str, settings: RunSettings, count: int, first: list[tuple[int, str]]) -> str:
    examples = ", ".join(f"line {line_no} ({custom_id!r})" for line_no, custom_id in first)
    more = f" and {count - len(first):,} more" if count > len(first) else ""
    output = settings.output if settings.output is not None else "the output"
    return (f"{display}: {count:,} requests already answered in {output} have changed since (their "
            f"endpoint or body differs from the one answered): {examples}{more}; nothing was sent.\n"
            "To send the changed ones again, rerun with --resend-changed (their old answers are replaced); "
            "to keep the old answers apart, write to a new output with -o.")


def _fingerprint(item: Job | InvalidLine | None) -> int:
    """The fingerprint of a parsed line as a number (0 for a line that is no longer a valid request)."""
    if not isinstance(item, Job):
        return 0
    return int(request_fingerprint(item.url, item.body), 16)


def _skip_block(plan: Plan, first: int, block: bytes, done: IdIndex, met: bytearray,
                line_hash: Callable[[bytes], int]) -> int:
    """Skip a whole block at once if every line starts with a plain custom_id, done and unchanged (its line hashes
    as recorded, or no fingerprint recorded) and not met before: the number of lines skipped, or 0 (nothing
    changed)."""
    ids = leading_ids(block) if block.endswith(b"\n") and b"\r" not in block else None
    if not ids:
        return 0
    lines = block.split(b"\n")
    lines.pop()  # after the last newline
    hashes = list(map(line_hash, lines)) if done.fingerprinted else [0] * len(lines)
    positions = done.positions_unchanged(map(str.encode, ids), hashes)
    if positions is None or any(map(met.__getitem__, positions)):
        return 0
    if len(set(positions)) != len(positions):  # an id repeats within the block: line by line finds which
        return 0
    for position in positions:
        met[position] = 1
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


def _line_id(raw: bytes, line_no: int) -> str | None:
    """The line's custom_id, found without validating the line (None: no usable id)."""
    first = LEADING_ID.match(raw)  # Batch API files put custom_id first: no need to parse the line
    if first is not None:
        return first.group(1).decode("utf-8", "replace")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    custom_id = data.get("custom_id", derived_id(line_no))
    return custom_id if isinstance(custom_id, str) else None


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
            derived = line_no if item.custom_id == derived_id(line_no) else first  # an id made for a line without one
            note = (f" (line {derived} has no custom_id: {item.custom_id!r} is the id it gets)"
                    if item.custom_id == derived_id(derived) else "")
            duplicates.append(f"{display}:{line_no}: custom_id: {item.custom_id!r} is also on line {first}{note}")
    return duplicates


def describe_invalid(plan: Plan) -> str:
    """The invalid lines of a plan, one per line, for a person."""
    lines = [bad.describe(plan.display) for bad in plan.invalid]
    if plan.invalid_count > len(plan.invalid):
        lines.append(f"(and {plan.invalid_count - len(plan.invalid)} more invalid lines)")
    return "\n".join(lines)


def iter_pending(plan: Plan, defaults: JobDefaults) -> Iterator[Job | InvalidLine]:
    """The plan's lines with work to do, parsed, in file order: what both paths send (done lines and other
    shards' lines are skipped, and reading stops after the last line with work). Each job carries the hash of
    its line (`output.lines.line_hasher`), which its answer records."""
    skip = plan.skip
    line_hash = line_hasher(defaults)
    for line_no, raw in iter_raw_lines(plan.path):
        if line_no > plan.last_line:
            break  # the rest is done already
        if line_no < len(skip) and skip[line_no]:
            continue
        item = parse_line(raw, line_no, defaults)
        if isinstance(item, Job):
            item.line_hash = line_hash(raw)
        yield item


def iter_lane(plan: Plan, defaults: JobDefaults, lane: int) -> Iterator[Job | InvalidLine]:
    """The plan's lines of one lane (`Plan.lanes`), parsed, in file order: what one reader of the online
    dispatcher sends. A block of the file with no line of the lane is passed over without splitting it."""
    lanes = plan.lanes
    mark = bytes([lane])
    line_hash = line_hasher(defaults)  # each job carries its line's hash, which its answer records
    first = 1
    for block in iter_blocks(plan.path):
        if first > plan.last_line:
            break
        count = block.count(b"\n")
        end = first + count + 1  # a last line without a newline counts too
        if lanes.find(mark, first, end) >= 0:
            for line_no, raw in block_lines(first, block):
                if line_no < len(lanes) and lanes[line_no] == lane:
                    item = parse_line(raw, line_no, defaults)
                    if isinstance(item, Job):
                        item.line_hash = line_hash(raw)
                    yield item
        first += count
