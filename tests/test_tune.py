"""`batchchat tune` against the simulator: the sweep, the table, the plot, and flags that hold."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from helpers import TEST_KEY, chat_lines, run_options, write_jobs
from typer.testing import CliRunner

import batchchat
from batchchat.cli import app
from batchchat.input.parse import Job
from batchchat.simulator import Simulator
from batchchat.tune import Limits, Step, recommend


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


# -- #22 item 4: judged against the limit the server announces ----------------------------------------------------

def _job(model: str = "gpt-4o-mini", max_tokens: int = 100) -> Job:
    return Job("x", "/v1/chat/completions", {"model": model, "max_tokens": max_tokens,
                                              "messages": [{"role": "user", "content": "hi"}]}, 1)


def _timed(c: int, rps: float, p50: float, p95: float, failed: int = 0, r429: int = 0) -> Step:
    return Step(c, 200, 200 - failed, failed, r429, 200 / max(rps, 1e-9), rps, p50, p95)


# the issue's server: 1,200 RPM announced in headers, ~300 ms answers; an unpaced sweep meets 429s from 8 up
ISSUE_STEPS = [_timed(1, 3.3, 300, 310), _timed(2, 6.6, 301, 312), _timed(4, 13.2, 302, 318),
               _timed(8, 19.8, 305, 330, failed=31, r429=31), _timed(16, 19.9, 310, 340, failed=90, r429=90)]


def test_with_an_announced_limit_tune_recommends_it_and_the_concurrency_it_needs() -> None:
    limits = Limits.of([_job()], {"gpt-4o-mini": (1200.0, None)}, "the server's x-ratelimit headers")
    assert limits is not None and limits.rate == pytest.approx(20.0)
    advice = recommend(ISSUE_STEPS, headers_seen=True, limits=limits)
    # before: --concurrency 4, 13.2 requests/s: 66% of the limit
    assert advice.rpm == 1200 and advice.tpm is None
    assert advice.concurrency == math.ceil(20.0 * 0.330 * 1.25) == 9  # the limit's rate x p95 x headroom
    verdicts = dict(advice.verdicts)
    assert verdicts[4].startswith("excluded: too few in flight: at p50 302 ms they carry at most 13.2 requests/s "
                                  "of the 20.0 the limit allows")
    assert verdicts[8].startswith("reaches the limit") and "31 429s were the limit's" in verdicts[8]
    assert "1,200 requests/min (the server's x-ratelimit headers)" in advice.reason
    assert advice.flags() == "--concurrency 9 --rpm 1200"


def test_a_token_limit_binds_through_the_requests_charge() -> None:
    sample = [_job(max_tokens=400)] * 3
    limits = Limits.of(sample, {"gpt-4o-mini": (10_000.0, 60_000.0)}, "headers")
    assert limits is not None
    charge = limits.tokens_per_request
    assert charge > 400 and limits.rate == pytest.approx(60_000 / 60 / charge)  # tokens bind, not 10,000 RPM
    advice = recommend([_timed(1, 1.0, 1000, 1100), _timed(4, 4.0, 1000, 1100)], True, limits)
    assert advice.concurrency == math.ceil(limits.rate * 1.1 * 1.25) and advice.tpm == 60_000


def test_each_model_of_a_mixed_sample_gets_its_own_limit() -> None:
    sample = [_job("a")] * 3 + [_job("b")]  # b is a quarter of the traffic and has a tenth of a's limit
    limits = Limits.of(sample, {"a": (6000.0, None), "b": (600.0, None)}, "headers")
    assert limits is not None and limits.rate == pytest.approx(min(100 / 0.75, 10 / 0.25))  # b binds: 40/s
    advice = recommend([_timed(16, 40.0, 100, 120)], True, limits)
    assert advice.flags() == f"--concurrency {advice.concurrency} --model-limit a=6000, --model-limit b=600,"


def test_a_level_that_errs_otherwise_is_excluded_and_no_level_may_reach_the_limit() -> None:
    limits = Limits.of([_job()], {"gpt-4o-mini": (60_000.0, None)}, "headers")  # 1,000/s: far above the server
    steps = [_timed(8, 80.0, 100, 110), _timed(16, 150.0, 105, 120), _timed(32, 90.0, 300, 900, failed=20)]
    advice = recommend(steps, True, limits)
    verdicts = dict(advice.verdicts)
    assert verdicts[32] == "excluded: 10.0% errors other than 429"
    assert advice.concurrency == 16 and "no level tried reached them" in advice.reason


def test_without_limits_each_level_says_why_it_was_not_chosen() -> None:
    steps = [_step(1, 10), _step(2, 20), _step(4, 39), _step(8, 40), _step(16, 45, failed=10)]
    verdicts = dict(recommend(steps, headers_seen=True).verdicts)
    assert verdicts[4].startswith("chosen")
    assert verdicts[2] == "excluded: 20.0 requests/s, more than 5% below the best 40.0"
    assert verdicts[16] == "excluded: 10.0% errors"
    assert verdicts[8] == "as fast, with more in flight than needed"


def test_tune_against_a_server_that_announces_its_limit_and_its_advice_reaches_it(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    # 2,400 RPM (40/s) announced in headers, 150 ms answers: 4 in flight carry 26.7/s (66%), 8 carry 53/s
    sim = simulator(rpm=2400, latency_ms=150)
    src = write_jobs(tmp_path / "job.jsonl", chat_lines(30))
    result = CliRunner().invoke(app, [
        "tune", str(src), "--base-url", sim.base_url, "--levels", "4,8,16", "--per-step", "200", "--pause", "0.5",
        "--plot", str(tmp_path / "tune.png"), "--json", str(tmp_path / "tune.json"),
    ], env={"OPENAI_API_KEY": TEST_KEY})
    assert result.exit_code == 0, result.output
    data = orjson.loads((tmp_path / "tune.json").read_bytes())
    advice = data["recommendation"]
    assert advice["rpm"] == 2400 and advice["concurrency"] >= 8, data  # before: --concurrency 4, no --rpm
    assert [s["concurrency"] for s in data["steps"]] == [4, 8]  # 8 carries the limit: 16 cannot go faster
    assert "4 in flight: excluded: too few in flight" in result.stdout
    assert f"recommended: --concurrency {advice['concurrency']} --rpm 2400" in result.stdout
    assert sim.stats()["rate_limited"] == 0  # the steps kept to the announced limit (before: 429s from 8 up)
    # the advice, followed, runs at the limit (the simulator's own count, second by second)
    sim.reset_stats()
    job = write_jobs(tmp_path / "real.jsonl", chat_lines(400))
    summary = batchchat.run(job, **run_options(sim, concurrency=advice["concurrency"], rpm=advice["rpm"]))
    stats = sim.stats()
    assert summary.succeeded == 400 and stats["rate_limited"] == 0
    steady = [row["requests"] for row in stats["series"][1:-1]]  # whole seconds between the first and the last
    assert sum(steady) / len(steady) >= 0.97 * 40, stats["series"]
