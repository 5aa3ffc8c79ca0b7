"""`batchchat tune` against the simulator: the sweep, the table, the plot, and flags that hold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
from helpers import TEST_KEY, chat_lines, run_options, write_jobs
from typer.testing import CliRunner

import batchchat
from batchchat.cli import app
from batchchat.simulator import Simulator
from batchchat.tune import Step, recommend


def _step(c: int, rps: float, failed: int = 0, r429: int = 0, sustained: float = 0.0) -> Step:
    return Step(c, 100, 100 - failed, failed, r429, 1.0, rps, 10.0, 20.0, sustained)


def test_recommendation_is_the_smallest_level_near_the_best_clean_throughput() -> None:
    steps = [_step(1, 10), _step(2, 20), _step(4, 39), _step(8, 40), _step(16, 45, failed=10)]
    advice = recommend(steps, headers_seen=True)
    assert advice.concurrency == 4 and advice.rpm is None  # 16 is faster but fails 10%


def test_a_silent_rate_limit_gets_an_rpm() -> None:
    steps = [_step(1, 10), _step(2, 20), _step(4, 25, r429=3, failed=3, sustained=18.0)]
    advice = recommend(steps, headers_seen=False)
    assert advice.concurrency == 2 and advice.rpm == int(0.9 * 18 * 60)
    assert advice.flags() == f"--concurrency 2 --rpm {advice.rpm}"


def test_tune_sweeps_a_saturating_server_and_its_flags_hold(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    # no headers, a silent limit of 1,200 rpm (20/s): concurrency alone cannot avoid the 429s
    sim = simulator(rpm=1200, latency_ms=20, rate_limit_headers=False)
    src = write_jobs(tmp_path / "job.jsonl", chat_lines(30))
    result = CliRunner().invoke(app, [
        "tune", str(src), "--base-url", sim.base_url, "--levels", "1,2,4", "--per-step", "80",
        "--pause", "1.0", "--plot", str(tmp_path / "tune.png"), "--json", str(tmp_path / "tune.json"),
    ], env={"OPENAI_API_KEY": TEST_KEY})
    assert result.exit_code == 0, result.output
    assert "concurrency  succeeded/s  errors/s" in result.stdout and "recommended: --concurrency" in result.stdout
    assert (tmp_path / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = orjson.loads((tmp_path / "tune.json").read_bytes())
    assert data["steps"][0]["concurrency"] == 1
    advice = data["recommendation"]
    # the flags, used on the same job, hold under 1% 429s
    sim.reset_stats()
    job = write_jobs(tmp_path / "real.jsonl", chat_lines(60))
    options = run_options(sim, concurrency=advice["concurrency"], adapt="off")
    if advice["rpm"]:
        options["rpm"] = advice["rpm"]
    summary = batchchat.run(job, **options)
    assert advice["rpm"] is not None and advice["rpm"] <= 1200
    assert summary.succeeded == 60, (advice, summary, data)
    assert sim.stats()["rate_limited"] <= 1
