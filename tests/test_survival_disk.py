"""The output cannot be written mid-run (disk full, file removed, made read-only): batchchat stops at once,
exits 4 with a clear message, counts nothing as done that is not on disk, and a rerun finishes the job."""

from __future__ import annotations

import resource
import sys
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import (
    chat_jobs,
    cli,
    count_lines,
    finish,
    parse_output,
    run_args,
    running,
    wait_for_lines,
    write_jsonl,
)

from batchchat.simulator import Simulator, SimulatorConfig

N = 1500
CONCURRENCY = 8
FSIZE = 64 * 1024  # bytes: the output's size limit, about 60 result lines


def _limit_file_size() -> None:
    # a process over RLIMIT_FSIZE gets SIGXFSZ, which Python ignores: the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE, FSIZE))


def _whole_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    return [orjson.loads(line) for line in data.split(b"\n")[:-1]]


def _finish_and_check(sim: Simulator, src: Path, out: Path, expect_repair: bool = False) -> None:
    rerun = cli(*run_args(sim.base_url, src, out))
    assert rerun.returncode == 0, rerun.stderr
    assert ("removed a torn last line" in rerun.stderr) == expect_repair, rerun.stderr
    counts = Counter(line["custom_id"] for line in parse_output(out))
    assert set(counts) == {f"r{i}" for i in range(N)} and max(counts.values()) == 1


def test_a_full_disk_stops_the_run_with_exit_4_and_the_rerun_finishes(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(N))
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    with Simulator.in_thread(SimulatorConfig(latency_ms=10)) as sim:
        proc = cli(*run_args(sim.base_url, src, out, "--concurrency", str(CONCURRENCY), "--summary-json", summary),
                   preexec_fn=_limit_file_size)
        assert proc.returncode == 4, proc.stderr
        assert "Traceback" not in proc.stderr
        assert f"batchchat: error: cannot write {out}: the disk is full; stopped (a rerun resumes)" in proc.stderr
        on_disk = _whole_lines(out)
        data = orjson.loads(summary.read_bytes())
        assert data["exit_code"] == 4 and "the disk is full" in data["stopped"]
        assert data["succeeded"] <= len(on_disk) < N  # nothing counted done that is not on disk
        # dispatch stopped at once: what was bought and not written is about one writer batch and what was in flight
        unwritten = sim.stats()["requests"] - len(on_disk)
        assert unwritten <= 4 * CONCURRENCY, unwritten
        print(f"\ndisk full at {out.stat().st_size} bytes: {len(on_disk)} lines on disk, summary says "
              f"{data['succeeded']}, {unwritten} answered but not written")
        torn = not out.read_bytes().endswith(b"\n")
        _finish_and_check(sim, src, out, expect_repair=torn)


def test_an_output_removed_mid_run_stops_it(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(N))
    out, summary, moved = tmp_path / "out.jsonl", tmp_path / "summary.json", tmp_path / "moved.jsonl"
    with Simulator.in_thread(SimulatorConfig(latency_ms=10)) as sim:
        with running(*run_args(sim.base_url, src, out, "--concurrency", str(CONCURRENCY),
                               "--summary-json", summary)) as proc:
            assert wait_for_lines(out, 100, proc) >= 100
            out.rename(moved)  # gone from where it was; what it holds is still countable
            code, _, err = finish(proc, timeout=30)
        assert code == 4, err
        assert f"output {out} was removed during the run" in err
        data = orjson.loads(summary.read_bytes())
        assert data["succeeded"] <= count_lines(moved) < N
        assert sim.stats()["requests"] - count_lines(moved) <= 4 * CONCURRENCY
        moved.rename(out)  # put it back: the rerun resumes from it
        _finish_and_check(sim, src, out)


def test_an_output_made_read_only_mid_run_stops_it(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(N))
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    with Simulator.in_thread(SimulatorConfig(latency_ms=10)) as sim:
        with running(*run_args(sim.base_url, src, out, "--concurrency", str(CONCURRENCY),
                               "--summary-json", summary)) as proc:
            assert wait_for_lines(out, 100, proc) >= 100
            out.chmod(0o444)
            code, _, err = finish(proc, timeout=30)
        assert code == 4, err
        assert f"output {out} was made read-only during the run" in err
        data = orjson.loads(summary.read_bytes())
        assert data["succeeded"] <= count_lines(out) < N
        # still read-only: the next run refuses it up front, even as root
        refused = cli(*run_args(sim.base_url, src, out))
        assert refused.returncode == 2 and f"output {out} is not writable" in refused.stderr, refused.stderr
        out.chmod(0o644)
        _finish_and_check(sim, src, out)
