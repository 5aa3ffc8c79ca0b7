"""Batches that do not simply complete: expired (resubmitted, or sent online with --fallback online), every
line failed, the enqueued-token limit, cancel."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio
from batch_support import assert_each_id_once, assert_nothing_bought_twice, batch_options, start_batch_sim
from helpers import chat_lines, write_jobs

import batchchat
from batchchat.api import abatch, settings_for
from batchchat.batch.runner import BatchRun
from batchchat.simulator import Simulator
from batchchat.simulator import tokens as tk

# each batch gets ~60 lines done before its 0.3 s window closes
EXPIRING = {"window_seconds": 0.3, "validate_seconds": 0.0, "lines_per_second": 200.0}


def test_an_expired_batch_keeps_its_lines_and_resubmits_the_rest(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, **EXPIRING)
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(150))
    out = tmp_path / "out.jsonl"
    summary = batchchat.run(job, out, **batch_options(sim))
    assert summary.exit_code == 0 and summary.succeeded == 150 and summary.failed == 0
    results = assert_each_id_once(out, [f"r{i}" for i in range(150)])
    stats = assert_nothing_bought_twice(sim)
    assert stats["final"].get("expired", 0) >= 1 and stats["lines_expired"] > 0
    assert stats["batches_created"] >= 2
    attempts = {r["custom_id"]: r["attempts"] for r in results}
    assert attempts["r0"] == 1 and attempts["r149"] >= 2  # the tail of the file ran in a later batch
    assert all(r["response"]["status_code"] == 200 for r in results)


def test_an_expired_batch_sends_the_rest_online_with_fallback_online(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, **EXPIRING)
    lines = chat_lines(150)
    for i, line in enumerate(lines):
        line["metadata"] = {"row": i}
    job = write_jobs(tmp_path / "job.jsonl", lines)
    out = tmp_path / "out.jsonl"
    summary = batchchat.run(job, out, **batch_options(sim, fallback="online"))
    assert summary.exit_code == 0 and summary.succeeded == 150
    results = {r["custom_id"]: r for r in assert_each_id_once(out, [f"r{i}" for i in range(150)])}
    stats = assert_nothing_bought_twice(sim)
    assert stats["batches_created"] == 1 and stats["final"] == {"expired": 1}
    unfinished = stats["lines_expired"]
    assert unfinished > 0 and sim.stats()["tokens_admitted"] > 0  # the online route answered the rest
    late = results["r149"]
    assert late["metadata"] == {"row": 149} and late["line"] == 150 and late["error"] is None
    assert late["latency_ms"] > 0  # answered online, not by the batch
    assert results["r0"]["latency_ms"] == 0.0


def test_a_batch_whose_every_line_failed_yields_one_error_line_per_request(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, fail_all=True)
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(30))
    out = tmp_path / "out.jsonl"
    summary = batchchat.run(job, out, **batch_options(sim))
    assert summary.exit_code == 1 and summary.succeeded == 0 and summary.failed == 30
    results = assert_each_id_once(out, [f"r{i}" for i in range(30)])
    assert all(r["error"] is not None and r["response"]["status_code"] == 500 for r in results)
    assert sim.stats()["batch"]["final"] == {"completed": 1}


def test_the_enqueued_token_limit_at_a_third_of_the_job_rejects_at_most_the_first_batch(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    lines = chat_lines(300)
    total = sum(tk.message_tokens(line["messages"]) for line in lines)
    # batches overlap (0.5 s each), so the second one submitted finds the queue full
    sim = start_batch_sim(simulator, enqueued_tokens=total // 3, lines_per_second=200.0)
    job = write_jobs(tmp_path / "job.jsonl", lines)
    out = tmp_path / "out.jsonl"
    messages: list[str] = []
    settings = settings_for(job, out, **batch_options(sim, batch_max_requests=100))
    summary = anyio.run(lambda: BatchRun(settings, echo=messages.append).run())
    assert summary.exit_code == 0 and summary.succeeded == 300
    assert_each_id_once(out, [f"r{i}" for i in range(300)])
    stats = assert_nothing_bought_twice(sim)
    assert stats["final"].get("failed", 0) == 1, stats["final"]  # the first, which taught the limit; no other
    assert any(f"enqueued-token limit of gpt-4o-mini is {total // 3:,}" in m for m in messages), messages
    assert stats["final"]["completed"] >= 4  # the rejected file was split to fit


def test_cancel_collects_what_finished_and_a_rerun_does_the_rest(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, validate_seconds=0.0, lines_per_second=100.0)
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(200))
    out = tmp_path / "out.jsonl"
    first = batchchat.run(job, out, **batch_options(sim, no_wait=True, batch_max_requests=100))
    assert first.exit_code == 0 and first.batches == 2
    time.sleep(0.3)
    settings = settings_for("-", out, **batch_options(sim))
    cancelled = anyio.run(lambda: abatch(settings, cancel=True))
    assert cancelled.exit_code == 1 and 0 < cancelled.succeeded < 200
    results = assert_each_id_once(out, [f"r{i}" for i in range(200)])
    codes = {r["error"]["code"] for r in results if r["error"]}
    assert codes == {"batch_cancelled"}
    assert sim.stats()["batch"]["cancels"] >= 1
    assert not (tmp_path / "out.jsonl.batch.json").exists()
    again = batchchat.run(job, out, **batch_options(sim))
    assert again.exit_code == 0 and again.succeeded == 200 - cancelled.succeeded
    assert_each_id_once(out, [f"r{i}" for i in range(200)])
    assert_nothing_bought_twice(sim)


def test_a_batch_that_fails_validation_gives_each_line_an_error_saying_why(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, max_requests_per_file=10)  # a provider stricter than --batch-max-requests
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(25))
    out = tmp_path / "out.jsonl"
    summary = batchchat.run(job, out, **batch_options(sim, batch_max_requests=20))
    assert summary.exit_code == 1 and summary.errors_by_code == {"batch_failed": 20} and summary.succeeded == 5
    results = {r["custom_id"]: r for r in assert_each_id_once(out, [f"r{i}" for i in range(25)])}
    assert all("too_many_tasks" in results[f"r{i}"]["error"]["message"] for i in range(20))  # the first file
    assert all(results[f"r{i}"]["error"] is None for i in range(20, 25))
    assert sim.stats()["batch"]["final"] == {"completed": 1, "failed": 1}


def test_a_rejected_key_stops_with_exit_3_before_anything_is_uploaded(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator)
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(5))
    summary = batchchat.run(job, tmp_path / "out.jsonl", **batch_options(sim, api_key="sk-wrong-key-123456"))
    assert summary.exit_code == 3 and "401" in (summary.stopped or "")
    assert "sk-wrong-key-123456" not in (summary.stopped or "")
    assert sim.stats()["batch"]["files_uploaded"] == 0
