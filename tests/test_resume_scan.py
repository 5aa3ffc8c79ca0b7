"""The block-at-a-time resume index and pre-scan give what the line-by-line versions gave, on every shape.

The references below are the line-by-line `load_resume_index` and `scan` as they were before they read
blocks; randomised outputs and inputs (clean ones, which take the block path, and messy ones: failures,
foreign key order, escapes, CRLF, a lone CR, BOM, blank lines, torn tails, duplicates, invalid lines and
invalid UTF-8), read with blocks from one byte to a megabyte, must come out the same, errors included.
"""

from __future__ import annotations

import random
import re
from array import array
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchchat.config.load import build_settings
from batchchat.config.settings import RunSettings
from batchchat.errors import UsageError
from batchchat.input import reader as jobs
from batchchat.input.parse import InvalidLine, derived_id, parse_line
from batchchat.input.plan import Plan, scan
from batchchat.input.reader import iter_raw_lines
from batchchat.output.ids import id_key
from batchchat.output.lines import Result, encode_result
from batchchat.output.resume import ResumeIndex, load_resume_index
from batchchat.pacing.tokens import completion_cap, prompt_estimate

CASES = 400
BLOCK_SIZES = (1, 7, 64, 300, 4096, 1 << 20)


# -- the references: line by line, as before -------------------------------------------------------------

_REF_HEAD = re.compile(rb'\{"id":"[^"\\]*","custom_id":("(?:[^"\\]|\\.)*"),"error":(null|\{)')
_REF_LEADING_ID = re.compile(rb'\{\s*"custom_id"\s*:\s*"([^"\\]*)"')


@dataclass
class RefIndex:
    """The reference reader's index: ids as str (the real one holds their 128-bit hashes)."""

    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    lines: int = 0
    repair: str | None = None


def reference_index(path: Path) -> RefIndex:
    index = RefIndex()
    if not path.exists():
        return index
    size = path.stat().st_size
    good_end = 0
    line_no = 0
    with path.open("rb") as handle:
        rest = b""
        while True:
            chunk = handle.read(1 << 20)
            data = rest + chunk
            if not chunk:
                break
            cut = data.rfind(b"\n") + 1
            whole, rest = data[:cut], data[cut:]
            for raw in whole.splitlines(keepends=True):
                line_no += 1
                _ref_index_line(index, path, line_no, raw)
                good_end += len(raw)
        if data:
            try:
                parsed = orjson.loads(data)
                _ref_record(index, parsed["custom_id"], parsed["error"] is None)
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass
            else:
                index.lines += 1
                good_end += len(data)
                index.repair = f"{path}: added the missing newline after the last line"
    if index.repair and good_end == size:
        with path.open("ab") as handle:
            handle.write(b"\n")
    elif good_end < size:
        with path.open("r+b") as handle:
            handle.truncate(good_end)
        index.repair = f"{path}: removed a torn last line ({size - good_end} bytes) left by an interrupted run"
    return index


def _ref_index_line(index: RefIndex, path: Path, line_no: int, raw: bytes) -> None:
    head = _REF_HEAD.match(raw)
    try:
        if head is not None:
            literal = head.group(1)
            custom_id = orjson.loads(literal) if b"\\" in literal else literal[1:-1].decode()
            _ref_record(index, custom_id, head.group(2) == b"null")
        else:
            parsed = orjson.loads(raw)
            _ref_record(index, parsed["custom_id"], parsed["error"] is None)
    except (orjson.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise UsageError(
            f"{path}:{line_no}: not a batchchat result line; refusing to append to this output (choose another -o)"
        ) from None
    index.lines += 1


def _ref_record(index: RefIndex, custom_id: str, ok: bool) -> None:
    if ok:
        index.done.add(custom_id)
        index.failed.discard(custom_id)
    elif custom_id not in index.done:
        index.failed.add(custom_id)


def reference_scan(path: Path, display: str, settings: RunSettings, done: set[str], failed: set[str]) -> Plan:
    plan = Plan(path, display, bytearray())
    hashes = array("q")
    skip = plan.skip
    for line_no, raw in iter_raw_lines(path):
        custom_id = _ref_done_id(raw, line_no, done) if done else None
        if custom_id is None:
            item = parse_line(raw, line_no, settings.defaults)
            custom_id = item.custom_id
        hashes.append(hash(custom_id))
        if custom_id in done:
            if len(skip) <= line_no:
                skip.extend(bytes(line_no + 1 - len(skip) + 1024))
            skip[line_no] = 1
            plan.skipped += 1
            continue
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
    lines = len(hashes)
    ordered = sorted(hashes)
    shared = {a for a, b in pairwise(ordered) if a == b}
    duplicates = _ref_duplicate_ids(path, display, settings, shared) if shared else []
    if duplicates:
        more = f"\n(and {len(duplicates) - 10} more)" if len(duplicates) > 10 else ""
        raise UsageError("custom_id must be unique within a file:\n" + "\n".join(duplicates[:10]) + more)
    if not lines:
        raise UsageError(f"{display}: no requests (the file is empty or has only blank lines)")
    return plan


def _ref_done_id(raw: bytes, line_no: int, done: set[str]) -> str | None:
    first = _REF_LEADING_ID.match(raw)
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


def _ref_duplicate_ids(path: Path, display: str, settings: RunSettings, shared: set[int]) -> list[str]:
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


# -- random files ---------------------------------------------------------------------------------------

PLAIN_IDS = [f"r{i}" for i in range(40)] + ["é-中", "a b", "x" * 80]
ODD_IDS = ['q"uote', "back\\slash", "tab\there", "line\nbreak"]


def result_line(custom_id: str, ok: bool) -> bytes:
    if ok:
        return encode_result(Result(custom_id, 1, 200, b'{"usage": {"prompt_tokens": 1}}', "req", attempts=1,
                                    usage={"prompt_tokens": 1}), "batch_req_" + str(len(custom_id)))
    return encode_result(Result(custom_id, 1, 500, b"<html>", error_code="http_500", error_message="no"), "b_x")


def random_output(rng: random.Random) -> bytes:
    messy = rng.random() < 0.5
    ids = rng.sample(PLAIN_IDS, rng.randint(1, len(PLAIN_IDS)))
    lines = []
    for _ in range(rng.randint(0, 60)):
        custom_id = rng.choice(ids)
        line = result_line(custom_id, rng.random() < 0.8)
        if messy:
            kind = rng.randrange(14)
            if kind == 0:
                line = result_line(rng.choice(ODD_IDS), rng.random() < 0.5)
            elif kind == 1:
                line = orjson.dumps({"custom_id": custom_id, "error": rng.choice([None, {"code": "x"}]), "x": 1})
                line += b"\n"
            elif kind == 2:
                line = line[:-1] + b"\r\n"
            elif kind == 3 and rng.random() < 0.2:
                line = rng.choice([b"hello\n", b"\n", line[:-1] + b"\r\r\n", b'{"custom_id": 5, "error": null}\n'])
            elif kind == 4 and rng.random() < 0.1:
                line = b'{"id":"x","custom_id":"\xff","error":null}\n'
        lines.append(line)
    data = b"".join(lines)
    tail = rng.randrange(4)
    if tail == 1:
        data += result_line(rng.choice(ids), True)[: rng.randint(1, 40)]  # torn
    elif tail == 2:
        data += result_line(rng.choice(ids), rng.random() < 0.5).rstrip(b"\n")  # whole, no newline
    return data


def input_line(rng: random.Random, custom_id: str | None, messy: bool) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi " * rng.randint(1, 5)}], "max_tokens": 3}
    if custom_id is None:
        return orjson.dumps({"prompt": "hello"})
    line = orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})
    if not messy:
        return line
    kind = rng.randrange(16)
    if kind == 0:
        return orjson.dumps({**body, "custom_id": custom_id})
    if kind == 1:
        return b'{ "custom_id" :\t"%s", "prompt": "x"}' % custom_id.encode()
    if kind == 2:
        return b'{"custom_id":"%s", oops' % custom_id.encode()
    if kind == 3:
        return rng.choice([b"", b"   ", b"\r", b"{oops", b"[1, 2]", b'{"custom_id": ""}', b'{"custom_id": 7}'])
    if kind == 4:
        return orjson.dumps({"custom_id": rng.choice(ODD_IDS), "prompt": "x"})
    if kind == 5:
        return b'{"custom_id":"\xff\xfe","prompt":"x"}'
    if kind == 6:
        return b"  " + line
    if kind == 7:
        return line + b"\r"
    if kind == 8:
        return orjson.dumps({"custom_id": custom_id, "prompt": "x", "stream": True})
    return line


def random_input(rng: random.Random) -> tuple[bytes, list[str]]:
    messy = rng.random() < 0.5
    unique = rng.random() < 0.7
    n = rng.randint(0, 50)
    pool = rng.sample(PLAIN_IDS, min(n, len(PLAIN_IDS))) if unique else rng.sample(PLAIN_IDS, rng.randint(1, 5))
    ids: list[str] = []
    lines = []
    for i in range(n):
        custom_id = None if rng.random() < 0.1 else (pool[i % len(pool)] if unique else rng.choice(pool))
        if custom_id is not None:
            ids.append(custom_id)
        lines.append(input_line(rng, custom_id, messy))
    data = b"\n".join(lines)
    if lines and rng.random() < 0.7:
        data += b"\n"
    if messy and rng.random() < 0.2:
        data = data.replace(b"\n", b"\r\n")
    if messy and rng.random() < 0.2:
        data = b"\xef\xbb\xbf" + data
    return data, ids


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (UsageError, UnicodeDecodeError) as exc:
        return (type(exc).__name__, str(exc))


def plan_view(plan: Any) -> Any:
    if not isinstance(plan, Plan):
        return plan
    skipped = [i for i, flag in enumerate(plan.skip) if flag]
    invalid = [(i.custom_id, i.line_no, i.field, i.reason) for i in plan.invalid]
    return (skipped, plan.to_run, plan.last_line, invalid, plan.invalid_count, plan.valid, plan.skipped,
            plan.estimated_tokens, plan.retried_ids)


def keys(ids: set[str]) -> list[int]:
    return sorted(id_key(i) for i in ids if isinstance(i, str))  # no input line has another id


def index_view(index: Any) -> Any:
    if isinstance(index, RefIndex):
        return keys(index.done), keys(index.failed), index.lines, index.repair
    if isinstance(index, ResumeIndex):
        return index.done.keys(), index.failed.keys(), index.lines, index.repair
    return index


# -- the tests ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_resume_index_matches_the_line_by_line_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    out = tmp_path / "out.jsonl"
    for _ in range(CASES // 4):
        data = random_output(rng)
        monkeypatch.setattr(jobs, "BLOCK_BYTES", rng.choice(BLOCK_SIZES))
        out.write_bytes(data)
        expected = index_view(outcome(reference_index, out))
        expected_file = out.read_bytes()
        out.write_bytes(data)
        assert index_view(outcome(load_resume_index, out)) == expected, data
        assert out.read_bytes() == expected_file


@pytest.mark.parametrize("seed", range(4))
def test_scan_matches_the_line_by_line_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = random.Random(100 + seed)
    src = tmp_path / "in.jsonl"
    for _ in range(CASES // 4):
        data, ids = random_input(rng)
        src.write_bytes(data)
        settings = build_settings({"input": str(src), "model": "m"}, environ={})
        extra = [derived_id(rng.randint(1, 50)) for _ in range(3)] + ["\ufffd\ufffd", "", "not-in-input"]
        done = {i for i in [*ids, *extra] if rng.random() < rng.choice([0.0, 0.5, 0.9, 1.0])}
        failed = {i for i in [*ids, *extra] if rng.random() < 0.3} - done
        monkeypatch.setattr(jobs, "BLOCK_BYTES", rng.choice(BLOCK_SIZES))
        expected = plan_view(outcome(reference_scan, src, "in", settings, set(done), set(failed)))
        given = ResumeIndex.of(done, failed)
        before = (given.done.keys(), given.failed.keys())
        assert plan_view(outcome(scan, src, "in", settings, given)) == expected, (data, done)
        assert (given.done.keys(), given.failed.keys()) == before  # the caller's index is left as it was


def test_every_line_done_is_skipped_block_by_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in.jsonl"
    ids = [f"r{i}" for i in range(500)]
    src.write_bytes(b"".join(input_line(random.Random(0), i, False) + b"\n" for i in ids))
    monkeypatch.setattr(jobs, "BLOCK_BYTES", 4096)
    settings = build_settings({"input": str(src)}, environ={})
    parsed: list[int] = []
    monkeypatch.setattr("batchchat.input.plan.parse_line", lambda raw, line_no, defaults: parsed.append(line_no))
    plan = scan(src, "in", settings, ResumeIndex.of(ids))
    assert (plan.skipped, plan.to_run, plan.last_line, parsed) == (500, 0, 0, [])
    assert all(plan.skip[1:501])


def test_a_done_id_twice_in_the_input_is_a_duplicate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in.jsonl"
    lines = [input_line(random.Random(0), f"r{i}", False) for i in range(300)]
    lines.append(lines[3])  # in another block than its first appearance
    src.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setattr(jobs, "BLOCK_BYTES", 1024)
    settings = build_settings({"input": str(src)}, environ={})
    with pytest.raises(UsageError, match=r"in:301: custom_id: 'r3' is also on line 4"):
        scan(src, "in", settings, ResumeIndex.of(f"r{i}" for i in range(300)))


def test_a_clean_output_is_read_block_by_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"".join(result_line(f"r{i}", i % 3 != 0) for i in range(300)) + result_line("r0", True))
    monkeypatch.setattr(jobs, "BLOCK_BYTES", 4096)
    parsed: list[bytes] = []
    monkeypatch.setattr("batchchat.output.resume._index_line", lambda index, path, line_no, raw: parsed.append(raw))
    index = load_resume_index(out)
    assert parsed == [] and index.lines == 301 and index.repair is None
    assert index.done.keys() == keys({f"r{i}" for i in range(300) if i % 3} | {"r0"})
    assert index.failed.keys() == keys({f"r{i}" for i in range(3, 300, 3)})  # r0 failed, then succeeded: done
