"""Output, pipes and cron (#15 items 5, 6, 7): `-o -` streams to stdout, other non-regular outputs are refused
up front, a cron log can be watched, `batchchat status` reports a job, and lock files are not left behind."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from helpers import chat_lines, write_jobs

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import cli, cli_args, cli_env, finish, parse_output, run_args, running, wait_for_lines

from batchchat.errors import OutputLockedError
from batchchat.output import lock as lock_module
from batchchat.output.lock import RunLock
from batchchat.report.status import describe_status, lock_holder, status_path
from batchchat.simulator import Simulator

# -- item 5: -o - and pipes


def test_dash_streams_results_to_stdout_and_the_summary_to_stderr(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(20))
    proc = cli(*run_args(sim.base_url, src, "-"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(f"r{i}" for i in range(20))
    assert all(line["error"] is None for line in lines)
    assert "exit code  0" in proc.stderr and "standard output" not in proc.stdout
    assert not (tmp_path / "-").exists() and not list(tmp_path.glob("-*"))  # no file named -, no lock
    again = cli(*run_args(sim.base_url, src, "-"), cwd=tmp_path)  # no resume: everything again
    assert len(again.stdout.splitlines()) == 20


def test_dash_into_a_pipe_that_closes_early_stops_cleanly(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(300))
    producer = subprocess.Popen(cli_args(*run_args(sim.base_url, src, "-")), env=cli_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    assert producer.stdout is not None
    producer.stdout.readline()
    producer.stdout.close()  # `| head -1`
    _out, err = producer.communicate(timeout=60)
    assert producer.returncode == 4, err  # the output cannot be written: exit 4, no traceback
    assert b"Traceback" not in err and b"cannot write results to standard output" in err


@pytest.mark.parametrize("target", ["/dev/stdout", "/dev/null", "fifo"])
def test_non_regular_outputs_are_refused_up_front(tmp_path: Path, sim: Simulator, target: str) -> None:
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        target = str(tmp_path / "fifo")
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(5))
    proc = cli(*run_args(sim.base_url, src, target), timeout=30)  # stdout is a pipe: /dev/stdout is one too
    assert proc.returncode == 2, proc.stderr
    assert f"output {target} is not a regular file" in proc.stderr and "use -o -" in proc.stderr
    assert sim.stats()["requests"] == 0


# -- item 7: lock files


def test_no_lock_file_is_left_after_a_finished_or_stopped_run(tmp_path: Path,
                                                             simulator: Callable[..., Simulator]) -> None:
    sim = simulator(latency_ms=50)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(200))
    out = tmp_path / "out.jsonl"
    lock = tmp_path / "out.jsonl.lock"
    with running(*run_args(sim.base_url, src, out, "--concurrency", "4")) as proc:
        assert wait_for_lines(out, 5, proc) >= 5
        assert lock.exists()
        proc.send_signal(signal.SIGINT)
        code, _out, err = finish(proc, timeout=30)
    assert code == 130, err
    assert not lock.exists()
    done = cli(*run_args(sim.base_url, src, out, "--concurrency", "64"))
    assert done.returncode == 0, done.stderr
    assert not lock.exists()


def test_a_stale_lock_of_a_killed_run_never_blocks_and_is_then_removed(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(3))
    (tmp_path / "out.jsonl.lock").write_text("999999\n")  # what a SIGKILL leaves
    proc = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "out.jsonl.lock").exists()


def test_a_lock_file_removed_under_a_waiting_opener_is_taken_again(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "out.jsonl"
    first = RunLock(output)
    first.acquire()
    real_flock = fcntl.flock
    raced: list[bool] = []

    def flock(fd: int, op: int) -> None:
        if not raced and op & fcntl.LOCK_EX:  # the second run opened the old file; the first ends right now
            raced.append(True)
            first.release()
        real_flock(fd, op)

    monkeypatch.setattr(lock_module.fcntl, "flock", flock)
    second = RunLock(output)
    second.acquire()  # it locked the removed file first, saw that, and locked the file now at the path
    monkeypatch.setattr(lock_module.fcntl, "flock", real_flock)
    assert raced and first.path.exists()
    with pytest.raises(OutputLockedError):
        RunLock(output).acquire()  # the lock the second run holds is the real one
    second.release()
    assert not first.path.exists()


# -- item 6: a cron run can be watched


def test_a_log_starts_with_the_run_and_shows_figures_within_seconds(tmp_path: Path,
                                                                    simulator: Callable[..., Simulator]) -> None:
    sim = simulator(latency_ms=100)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(60))
    proc = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl", "--concurrency", "2", "--rpm", "6000",
                         "--log-interval", "600", progress="log"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    log = [line for line in proc.stderr.splitlines() if " batchchat: " in line]
    first = log[0]
    for part in ("run ", "in.jsonl", "out.jsonl", "60 requests", f"{sim.base_url}/chat/completions", "rpm 6000",
                 "concurrency 2"):
        assert part in first, first
    figures = [line for line in log if "done (" in line]
    assert len(figures) >= 2, log  # one within seconds though --log-interval is 600, and the final one
    assert "60/60 done" in figures[-1]


def test_status_reports_a_running_then_a_finished_job(tmp_path: Path,
                                                      simulator: Callable[..., Simulator]) -> None:
    sim = simulator(latency_ms=100)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(40))
    out = tmp_path / "out.jsonl"
    with running(*run_args(sim.base_url, src, out, "--concurrency", "2")) as proc:
        wait_for_lines(out, 4, proc)
        deadline = time.monotonic() + 10
        while not status_path(out).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = cli("status", out)
        code, _out, err = finish(proc, timeout=60)
    assert code == 0, err
    assert seen.returncode == 0, seen.stderr
    assert f"running (pid {proc.pid} holds the lock)" in seen.stdout
    assert "/40 done" in seen.stdout and "state    running" in seen.stdout
    after = cli("status", out)
    assert "no run holds the lock" in after.stdout and "40/40 done (100%)" in after.stdout
    assert "finished, exit code 0" in after.stdout
    assert cli("status", tmp_path / "nothing.jsonl").returncode == 2


def test_after_a_resume_the_figures_count_the_whole_job(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(10))
    out = tmp_path / "out.jsonl"
    assert cli(*run_args(sim.base_url, src, out)).returncode == 0
    write_jobs(src, chat_lines(25))
    proc = cli(*run_args(sim.base_url, src, out, progress="log"))
    assert proc.returncode == 0, proc.stderr
    figures = [line for line in proc.stderr.splitlines() if "done (" in line]
    assert "25/25 done (100%)" in figures[-1], figures
    state = orjson.loads(status_path(out).read_bytes())
    assert (state["job_total"], state["job_done"], state["done_before"]) == (25, 25, 10)
    assert len(parse_output(out)) == 25


def test_status_without_a_state_file_counts_the_output(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(4))
    out = tmp_path / "out.jsonl"
    assert cli(*run_args(sim.base_url, src, out)).returncode == 0
    status_path(out).unlink()
    text, found = describe_status(out)
    assert found and "4 lines: 4 succeeded, 0 failed" in text
    assert lock_holder(out) is None
