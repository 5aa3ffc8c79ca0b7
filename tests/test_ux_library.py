"""The library, tune, validate and the summary's words (#15 items 10, 12, 14, 16)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import TEST_KEY, chat_lines, read_output, run_options, write_jobs

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import cli

import batchchat
from batchchat.config.load import build_settings
from batchchat.report.counters import Counters
from batchchat.report.summary import Summary
from batchchat.simulator import Simulator
from batchchat.tune import load_sample, render_table, sweep

# -- item 10: the library


def test_on_result_gets_the_line_as_written(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", [*chat_lines(3), {"model": "gpt-4o-mini", "prompt": "no id"}])
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        await batchchat.arun(src, tmp_path / "out.jsonl", on_result=seen.append, **run_options(sim))

    asyncio.run(main())
    on_disk = read_output(tmp_path / "out.jsonl")
    assert sorted(seen, key=lambda x: x["line"]) == sorted(on_disk, key=lambda x: x["line"])
    assert all(line["id"].startswith("batch_req_") for line in seen)
    assert {line["custom_id"] for line in seen} == {"r0", "r1", "r2", "line-4"}


def test_the_sync_run_works_inside_a_running_event_loop(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(5))

    async def notebook_cell() -> Any:
        return batchchat.run(src, tmp_path / "out.jsonl", **run_options(sim))  # what a notebook does

    summary = asyncio.run(notebook_cell())
    assert summary.exit_code == 0 and summary.succeeded == 5
    assert "worker thread" in (batchchat.run.__doc__ or "")


# -- item 12: tune counts successes


def test_tune_counts_successes_and_shows_errors_beside(tmp_path: Path,
                                                       simulator: Callable[..., Simulator]) -> None:
    sim = simulator(fault_rates={"500": 0.5}, seed=1)
    src = write_jobs(tmp_path / "job.jsonl", chat_lines(10))
    settings = build_settings({"input": str(src), "base_url": sim.base_url, "api_key": TEST_KEY})
    jobs = load_sample(src, settings, 10)
    steps, _, _ = asyncio.run(sweep(settings, jobs, (4,), per_step=40, pause=0.0))
    (step,) = steps
    assert step.failed > 5 and step.succeeded > 5
    assert step.succeeded_per_second == pytest.approx(step.succeeded / step.seconds, rel=0.05, abs=0.2)
    assert step.failed_per_second == pytest.approx(step.failed / step.seconds, rel=0.05, abs=0.2)
    table = render_table(steps)
    assert "succeeded/s  errors/s" in table and f"{step.failed_per_second:,.1f}" in table


# -- item 14: validate


def test_validate_says_which_max_tokens_it_assumed_and_flags_requests_over_tpm(tmp_path: Path) -> None:
    lines = [{"custom_id": "a", "model": "m", "messages": [{"role": "user", "content": "hi"}]},
             {"custom_id": "b", "model": "m", "max_tokens": 5000, "messages": [{"role": "user", "content": "hi"}]},
             {"custom_id": "c", "model": "e", "input": "embed me"}]
    src = write_jobs(tmp_path / "in.jsonl", lines)
    plain = cli("validate", src)
    assert plain.returncode == 0, plain.stderr
    assert "1 requests set no max_tokens: each is charged 256 completion tokens" in plain.stderr
    over = cli("validate", src, "--tpm", "1000")
    assert over.returncode == 2
    assert "1 requests are larger than the whole --tpm budget of 1,000" in over.stderr
    assert f"{src}:2: estimated at 5," in over.stderr and f"{src}:1:" not in over.stderr


def test_a_derived_id_that_collides_is_named_as_derived(tmp_path: Path) -> None:
    msg = [{"role": "user", "content": "hi"}]
    src = write_jobs(tmp_path / "in.jsonl", [{"custom_id": "line-2", "model": "m", "messages": msg},
                                             {"model": "m", "messages": msg}])
    proc = cli("validate", src)
    assert proc.returncode == 2
    assert (f"{src}:2: custom_id: 'line-2' is also on line 1 (line 2 has no custom_id: 'line-2' is the id it gets)"
            in proc.stderr), proc.stderr


# -- item 16: say what is true


def _summary(estimated: int, actual: int) -> Summary:
    counters = Counters(total=1, succeeded=1)
    counters.estimated_prompt_tokens, counters.estimated_prompt_actual = estimated, actual
    return Summary.from_counters(counters, "in.jsonl", "out.jsonl", 0, None, endpoint="http://h/v1/chat/completions")


def test_the_estimate_says_in_which_direction_it_was_off() -> None:
    assert "prompt tokens over-estimated by 2.7% (estimate vs usage)" in _summary(1027, 1000).render()
    assert "prompt tokens under-estimated by 10.0%" in _summary(900, 1000).render()
    assert "endpoint   http://h/v1/chat/completions" in _summary(1, 1).render()


def test_the_readme_says_what_a_sigkill_costs() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert "at most `--concurrency`" in readme and "SIGKILL" in readme
    assert "% off" not in readme
