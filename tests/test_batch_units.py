"""The pieces of the batch path that need no server: splitting, the state file, collecting result files."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from helpers import chat_lines, write_jobs

from batchchat.api import settings_for
from batchchat.batch.collect import ChunkCollector
from batchchat.batch.runner import BatchRun
from batchchat.batch.split import Limits, read_index, split_plan
from batchchat.batch.state import BatchState, Chunk, state_path
from batchchat.errors import UsageError
from batchchat.input.plan import scan
from batchchat.output.lines import Result
from batchchat.output.writer import ResultWriter


def _split(tmp_path: Path, lines: list[dict], limits: Limits) -> tuple[list[Chunk], list[Result]]:
    job = write_jobs(tmp_path / "job.jsonl", lines)
    settings = settings_for(job, base_url="http://127.0.0.1:9/v1")
    plan = scan(job, "job.jsonl", settings, set(), set())
    work = tmp_path / "work"
    work.mkdir()
    rejected: list[Result] = []
    return split_plan(plan, settings, work, limits, 1, rejected.append), rejected


def test_split_keeps_one_model_and_endpoint_per_file_within_the_limits(tmp_path: Path) -> None:
    lines = chat_lines(25)
    for line in lines[20:]:
        line["model"] = "gpt-4o"
    lines += [{"custom_id": f"e{i}", "model": "text-embedding-3-small", "input": ["a", "b", "c"]} for i in range(4)]
    chunks, rejected = _split(tmp_path, lines, Limits(max_requests=8, max_bytes=10_000, max_inputs=7))
    assert not rejected
    shapes = [(c.model, c.requests) for c in chunks]
    assert sorted(shapes) == sorted([("gpt-4o-mini", 8), ("gpt-4o-mini", 8), ("gpt-4o-mini", 4), ("gpt-4o", 5),
                                     ("text-embedding-3-small", 2), ("text-embedding-3-small", 2)])
    work = tmp_path / "work"
    for chunk in chunks:
        data = (work / chunk.name).read_bytes()
        assert len(data) == chunk.bytes <= 10_000
        batch_lines = [orjson.loads(raw) for raw in data.splitlines()]
        assert {line["body"]["model"] for line in batch_lines} == {chunk.model}
        assert {line["url"] for line in batch_lines} == {chunk.endpoint}
        assert all(line["method"] == "POST" for line in batch_lines)
        index = list(read_index(work / chunk.index_name))
        assert [e["id"] for e in index] == [line["custom_id"] for line in batch_lines]
        assert sum(e["t"] for e in index) == chunk.tokens > 0


def test_a_line_larger_than_a_batch_file_is_rejected_with_its_place(tmp_path: Path) -> None:
    lines = chat_lines(2)
    lines[1]["messages"][0]["content"] = "y" * 500
    chunks, rejected = _split(tmp_path, lines, Limits(max_bytes=300))
    assert [c.requests for c in chunks] == [1]
    assert [(r.custom_id, r.error_code) for r in rejected] == [("r1", "request_too_large")]
    assert "job.jsonl:2" in (rejected[0].error_message or "")


def test_the_state_file_round_trips_and_is_replaced_whole(tmp_path: Path) -> None:
    state = BatchState(state_path(tmp_path / "out.jsonl"), "job.jsonl")
    state.chunks = [Chunk(1, "/v1/chat/completions", "gpt-4o-mini", 3, 100, 30, file_id="file-1")]
    state.save()
    state.chunks[0].phase = "uploaded"
    state.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl.batch.json"]  # no temporary left
    again = BatchState.load(state.path)
    assert again is not None and again.chunks[0].phase == "uploaded" and again.run_tag == state.run_tag
    assert state.upload_name(state.chunks[0]) == f"batchchat-{state.run_tag}-00001.jsonl"
    state.path.write_bytes(b"{not json")
    with pytest.raises(UsageError, match="not a batchchat batch state file"):
        BatchState.load(state.path)


def test_a_completed_batch_with_neither_file_gives_every_line_an_error(tmp_path: Path) -> None:
    chunks, _ = _split(tmp_path, chat_lines(4), Limits())
    writer = ResultWriter(tmp_path / "out.jsonl")
    writer.open()
    counted: list[Result] = []
    got = ChunkCollector(writer, lambda r, _line, _id: counted.append(r)).collect(
        tmp_path / "work", chunks[0], [], "completed", False, ("missing_from_batch_output", "no line"), 1)
    writer.close()
    assert got.failed == 4 and got.succeeded == 0 and not got.unfinished
    lines = [orjson.loads(raw) for raw in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [(line["custom_id"], line["error"]["code"], line["line"]) for line in lines] == [
        (f"r{i}", "missing_from_batch_output", i + 1) for i in range(4)]


def test_a_validation_failure_names_the_input_line(tmp_path: Path) -> None:
    lines = chat_lines(3)
    job = write_jobs(tmp_path / "job.jsonl", [{"note": "blank"}, *lines])  # an invalid first line shifts lines
    chunks, rejected = _split(tmp_path, [{"note": "x"}, *lines], Limits())
    assert len(rejected) == 1
    settings = settings_for(job, tmp_path / "out.jsonl", base_url="http://127.0.0.1:9/v1")
    run = BatchRun(settings)
    run._display_name = "job.jsonl"
    state = BatchState(state_path(tmp_path / "out.jsonl"), "job.jsonl")
    state.path = tmp_path / "work.json"  # its work directory: tmp_path / "work"
    errors = [{"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "line": 2}]
    reason = run._failure_reason(state, chunks[0], errors)
    assert reason == "job.jsonl:3: invalid_json_line: This line is not parseable as valid JSON."
