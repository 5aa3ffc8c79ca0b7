"""The CLI of the batch path, run as a user runs it: `run --via batch --simulate` and `cancel`."""

from __future__ import annotations

from pathlib import Path

from batch_support import assert_each_id_once
from cli_process import cli, cli_env
from helpers import chat_lines, write_jobs


def test_run_via_batch_simulate_is_the_demo(tmp_path: Path) -> None:
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(300))
    done = cli("run", job, "--via", "batch", "--simulate", "--batch-max-requests", "100", "--progress", "off",
               env=cli_env(None), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "via        Batch API, 3 batches" in done.stdout and "at Batch API prices" in done.stdout
    assert "batch file 3: 100 requests" in done.stderr
    assert_each_id_once(tmp_path / "job.results.jsonl", [f"r{i}" for i in range(300)])


def test_cancel_without_a_batch_run_is_a_usage_error(tmp_path: Path) -> None:
    done = cli("cancel", tmp_path / "nothing.jsonl", "--base-url", "http://127.0.0.1:9/v1", timeout=60)
    assert done.returncode == 2 and "no batch run to cancel" in done.stderr
