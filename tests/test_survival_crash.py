"""Crashes, signals and overlapping runs, through the real CLI as a separate process.

SIGKILL at random moments, rerun, until the job exits 0: one whole success line per id, and no result that
reached the disk is ever bought again (the re-bought requests are bounded by what was in flight at the kills).
SIGINT/SIGTERM: in-flight requests finish within --grace, everything is flushed, exit 130, the rerun finishes.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import (
    chat_jobs,
    cli,
    count_lines,
    finish,
    parse_output,
    run_args,
    running,
    start,
    wait_for_lines,
    write_jsonl,
)

from batchchat.simulator import Simulator, SimulatorConfig


def _check_complete(out: Path, n: int) -> list[dict]:
    lines = parse_output(out)  # every line whole JSON, no torn tail
    counts = Counter(line["custom_id"] for line in lines)
    assert set(counts) == {f"r{i}" for i in range(n)}, "ids missing"
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:5]
    assert all(line["error"] is None and line["response"]["status_code"] == 200 for line in lines)
    return lines


def _kill_and_resume(tmp_path: Path, n: int, kills: int, concurrency: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(n))
    out = tmp_path / "out.jsonl"
    config = SimulatorConfig(latency_ms=20, latency_max_ms=50, seed=seed)
    done_kills = 0
    repaired = 0
    with Simulator.in_thread(config) as sim:
        args = run_args(sim.base_url, src, out, "--concurrency", str(concurrency))
        for _ in range(kills + 5):  # bounded: the kills, then at most a few runs to finish
            before = count_lines(out)
            proc = start(*args)
            try:
                if done_kills < kills:
                    # a random moment: after a random number of new lines, plus up to 40 ms
                    target = before + rng.randint(1, max(2, (n - before) // (kills - done_kills + 1)))
                    wait_for_lines(out, target, proc, timeout=60)
                    time.sleep(rng.uniform(0, 0.04))
                    if proc.poll() is None:
                        proc.kill()  # SIGKILL
                        done_kills += 1
                _, err = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            err_text = err.decode()
            assert "Traceback" not in err_text, err_text
            repaired += "removed a torn last line" in err_text
            if proc.returncode == 0:
                break
            assert proc.returncode == -signal.SIGKILL, (proc.returncode, err_text)
        assert proc.returncode == 0, "the job never finished"
        stats = sim.stats()
    lines = _check_complete(out, n)
    answered = stats["responses"].get("200", 0)
    rebought = answered - len(lines)
    assert done_kills == kills
    assert 0 <= rebought <= kills * concurrency, (rebought, kills * concurrency)
    return {"kills": done_kills, "rebought": rebought, "bound": kills * concurrency, "answered": answered,
            "torn_repaired": repaired}


def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    figures = _kill_and_resume(tmp_path, n=2000, kills=10, concurrency=16, seed=4)
    print(f"\ncrash/resume: {figures}")


@pytest.mark.slow
def test_sigkill_many_times_on_a_larger_job(tmp_path: Path) -> None:
    figures = _kill_and_resume(tmp_path, n=10_000, kills=30, concurrency=64, seed=11)
    print(f"\ncrash/resume (slow): {figures}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_finishes_what_is_in_flight_then_exits_130(tmp_path: Path, signum: int) -> None:
    n, concurrency = 600, 16
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(n))
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    with Simulator.in_thread(SimulatorConfig(latency_ms=150, latency_max_ms=300)) as sim:
        with running(*run_args(sim.base_url, src, out, "--concurrency", str(concurrency), "--grace", "10",
                               "--summary-json", summary, "--adapt", "off")) as proc:
            assert wait_for_lines(out, 40, proc) >= 40
            proc.send_signal(signum)
            code, stdout, err = finish(proc, timeout=20)
        assert code == 130, err
        assert f"{signal.Signals(signum).name}: stopping; waiting up to 10 s for" in err
        assert "exit code  130" in stdout
        lines = parse_output(out)
        # every request that was answered was written: nothing in flight was dropped
        assert sim.stats()["responses"]["200"] == len(lines) < n
        assert sim.stats()["in_flight"] == 0
        data = orjson.loads(summary.read_bytes())
        assert data["exit_code"] == 130 and data["succeeded"] == len(lines)
        assert "rerun the same command to resume" in data["stopped"]
        rerun = cli(*run_args(sim.base_url, src, out, "--concurrency", "64", "--adapt", "off"))
        assert rerun.returncode == 0, rerun.stderr
        assert sim.stats()["responses"]["200"] == n  # nothing bought twice
    _check_complete(out, n)


def test_the_grace_period_bounds_the_wait_and_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    n = 200
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(n))
    out = tmp_path / "out.jsonl"
    # every request takes 20 s
    with Simulator.in_thread(SimulatorConfig(latency_ms=20_000)) as slow, \
            Simulator.in_thread(SimulatorConfig()) as fast:
        for grace, second in ((0.5, False), (30.0, True)):
            with running(*run_args(slow.base_url, src, out, "--concurrency", "8", "--grace", str(grace),
                                   "--adapt", "off")) as proc:
                deadline = time.monotonic() + 20
                while slow.stats()["in_flight"] < 8 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert slow.stats()["in_flight"] == 8
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                if second:
                    time.sleep(0.3)
                    proc.send_signal(signal.SIGINT)
                code, _, err = finish(proc, timeout=15)
                took = time.monotonic() - sent
            assert code == 130, err
            assert took < 10, took  # not the 20 s of the requests, nor the 30 s grace
            if second:
                assert "SIGINT again: stopping now" in err
            assert count_lines(out) == 0  # nothing answered, nothing written
        rerun = cli(*run_args(fast.base_url, src, out))
        assert rerun.returncode == 0, rerun.stderr
    _check_complete(out, n)


def test_a_second_run_on_the_same_output_is_refused_and_a_killed_runs_lock_does_not_block(tmp_path: Path) -> None:
    n = 400
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(n))
    out = tmp_path / "out.jsonl"
    with Simulator.in_thread(SimulatorConfig(latency_ms=50)) as sim:
        args = run_args(sim.base_url, src, out, "--concurrency", "2")
        first = start(*args)
        try:
            assert wait_for_lines(out, 5, first) >= 5
            second = cli(*args)
            assert second.returncode == 4, second.stderr
            assert "Traceback" not in second.stderr
            assert (f"another batchchat run (pid {first.pid}) is writing {out}; refusing to start a second one "
                    "on the same output") in second.stderr
            assert first.poll() is None  # the first run goes on
        finally:
            first.kill()
            first.wait()
        # the killed run's lock file is left behind, naming its dead pid: a stale lock that must not block
        assert (tmp_path / "out.jsonl.lock").read_text().strip() == str(first.pid)
        third = cli(*args[:-1], "32")  # same output, more concurrency
        assert third.returncode == 0, third.stderr
    _check_complete(out, n)


def test_input_from_stdin_survives_a_kill_too(tmp_path: Path) -> None:
    n = 300
    data = b"".join(orjson.dumps(job) + b"\n" for job in chat_jobs(n))
    out = tmp_path / "out.jsonl"
    with Simulator.in_thread(SimulatorConfig(latency_ms=30)) as sim:
        args = run_args(sim.base_url, "-", out, "--concurrency", "4")
        proc = start(*args, stdin=subprocess.PIPE)
        try:
            proc.stdin.write(data)
            proc.stdin.close()
            wait_for_lines(out, 30, proc)
            proc.kill()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        done = count_lines(out)
        assert 30 <= done < n
        rerun = cli(*args, input=data.decode())
        assert rerun.returncode == 0, rerun.stderr
        assert f"resuming: {done:,} requests already done" in rerun.stderr
    _check_complete(out, n)
