"""`--via batch` end to end against the simulator's Batch API over loopback: split, submit, poll, collect;
bad input; --no-wait then collect; the key never on disk; 429s on upload and creation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from batch_support import assert_each_id_once, assert_nothing_bought_twice, batch_options, start_batch_sim
from helpers import TEST_KEY, chat_lines, write_jobs

import batchchat
from batchchat.errors import UsageError
from batchchat.simulator import Simulator


def test_a_job_goes_through_three_batch_files_and_comes_back_one_line_per_id(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator)
    lines = chat_lines(250)
    for i, line in enumerate(lines):
        line["metadata"] = {"row": i}
    job = write_jobs(tmp_path / "job.jsonl", lines)
    out = tmp_path / "out.jsonl"
    summary = batchchat.run(job, out, **batch_options(sim, batch_max_requests=100))
    assert summary.exit_code == 0 and summary.succeeded == 250 and summary.failed == 0
    assert summary.batches == 3
    results = assert_each_id_once(out, [f"r{i}" for i in range(250)])
    by_id = {r["custom_id"]: r for r in results}
    first = by_id["r7"]
    assert first["error"] is None and first["response"]["status_code"] == 200
    assert first["usage"]["prompt_tokens"] > 0 and first["response"]["body"]["usage"] == first["usage"]
    assert first["metadata"] == {"row": 7} and first["line"] == 8 and first["attempts"] == 1
    assert first["id"].startswith("batch_req_")
    stats = assert_nothing_bought_twice(sim)
    assert stats["files_uploaded"] == 3 and stats["batches_created"] == 3
    assert summary.prompt_tokens == sum(r["usage"]["prompt_tokens"] for r in results)
    # the run finished: no state, no chunk files left behind
    assert not (tmp_path / "out.jsonl.batch.json").exists() and not (tmp_path / "out.jsonl.batch").exists()
    # a rerun has nothing to do and buys nothing
    again = batchchat.run(job, out, **batch_options(sim))
    assert again.exit_code == 0 and again.total == 0 and again.skipped_already_done == 250
    assert assert_nothing_bought_twice(sim)["files_uploaded"] == 3


def test_one_batch_per_model_and_endpoint(tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator)
    lines = chat_lines(10) + chat_lines(5, prefix="b")
    for line in lines[10:]:
        line["model"] = "gpt-4o"
    lines += [{"custom_id": f"e{i}", "model": "text-embedding-3-small", "input": f"text {i}"} for i in range(4)]
    job = write_jobs(tmp_path / "job.jsonl", lines)
    summary = batchchat.run(job, tmp_path / "out.jsonl", **batch_options(sim))
    assert summary.exit_code == 0 and summary.batches == 3
    results = assert_each_id_once(tmp_path / "out.jsonl", [line["custom_id"] for line in lines])
    models = {r["custom_id"]: r["response"]["body"]["model"] for r in results}
    assert models["r0"] == "gpt-4o-mini" and models["b0"] == "gpt-4o"
    assert models["e0"] == "text-embedding-3-small"


def test_bad_lines_get_error_lines_before_anything_is_uploaded_and_strict_refuses(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator)
    lines: list[object] = chat_lines(3)
    lines.append({"custom_id": "streamy", "model": "gpt-4o-mini", "stream": True,
                  "messages": [{"role": "user", "content": "hi"}]})
    lines.append({"custom_id": "huge", "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 3000}]})
    job = write_jobs(tmp_path / "job.jsonl", lines)
    with pytest.raises(UsageError, match="--strict"):
        batchchat.run(job, tmp_path / "strict.jsonl", **batch_options(sim, strict=True, batch_max_bytes=2000))
    assert sim.stats()["batch"]["files_uploaded"] == 0
    out = tmp_path / "out.jsonl"
    summary = batchchat.run(job, out, **batch_options(sim, batch_max_bytes=2000))
    assert summary.exit_code == 1 and summary.succeeded == 3 and summary.failed == 2
    results = {r["custom_id"]: r for r in assert_each_id_once(out, ["r0", "r1", "r2", "streamy", "huge"])}
    assert results["streamy"]["error"]["code"] == "invalid_request"
    assert "stream" in results["streamy"]["error"]["message"]
    assert results["huge"]["error"]["code"] == "request_too_large"
    assert "job.jsonl:5" in results["huge"]["error"]["message"]


def test_no_wait_submits_and_exits_0_then_the_same_command_collects(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, validate_seconds=0.1, lines_per_second=20.0)  # 2.5 s a batch
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(120))
    out = tmp_path / "out.jsonl"
    first = batchchat.run(job, out, **batch_options(sim, no_wait=True, batch_max_requests=50))
    assert first.exit_code == 0 and first.succeeded == 0 and first.batches == 3
    assert "--no-wait" in (first.stopped or "")
    state_file = tmp_path / "out.jsonl.batch.json"
    state = orjson.loads(state_file.read_bytes())
    assert [c["phase"] for c in state["chunks"]] == ["submitted"] * 3
    assert all(c["batch_id"] and c["file_id"] for c in state["chunks"])
    # the key is in none of the files batchchat keeps, nor in their names
    kept = [state_file, *sorted((tmp_path / "out.jsonl.batch").iterdir())]
    assert len(kept) >= 7
    for path in kept:
        assert TEST_KEY not in path.name and TEST_KEY.encode() not in path.read_bytes()
    second = batchchat.run(job, out, **batch_options(sim))
    assert second.exit_code == 0 and second.succeeded == 120
    assert_each_id_once(out, [f"r{i}" for i in range(120)])
    stats = assert_nothing_bought_twice(sim)
    assert stats["files_uploaded"] == 3 and stats["batches_created"] == 3


def test_429s_on_upload_and_creation_are_waited_out(tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, upload_rpm=120, create_rpm=120)
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(40))
    summary = batchchat.run(job, tmp_path / "out.jsonl", **batch_options(sim, batch_max_requests=10))
    assert summary.exit_code == 0 and summary.succeeded == 40
    stats = assert_nothing_bought_twice(sim)
    assert stats["rate_limited_uploads"] + stats["rate_limited_creates"] > 0
    assert stats["files_uploaded"] == 4 and stats["batches_created"] == 4
    assert summary.rate_limited_429 > 0
    assert_each_id_once(tmp_path / "out.jsonl", [f"r{i}" for i in range(40)])


def test_another_input_on_the_output_of_an_unfinished_batch_run_is_refused(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, validate_seconds=0.1, lines_per_second=20.0)
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(20))
    other = write_jobs(tmp_path / "other.jsonl", chat_lines(5, prefix="o"))
    out = tmp_path / "out.jsonl"
    assert batchchat.run(job, out, **batch_options(sim, no_wait=True)).exit_code == 0
    with pytest.raises(UsageError, match="unfinished batch run of"):
        batchchat.run(other, out, **batch_options(sim))
    assert batchchat.run(job, out, **batch_options(sim)).exit_code == 0
    assert_each_id_once(out, [f"r{i}" for i in range(20)])
