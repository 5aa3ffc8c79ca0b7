"""A rejected key or a refused account through the real CLI: stop early, exit 3, name the variable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import PLANTED_KEY, chat_jobs, cli, cli_env, parse_output, run_args, write_jsonl

from batchchat.simulator import Simulator, SimulatorConfig

N = 300
CONCURRENCY = 4


def _check_stopped_early(sim: Simulator, out: Path, proc_stderr: str) -> None:
    assert "Traceback" not in proc_stderr
    stats = sim.stats()
    assert 1 <= stats["requests"] <= CONCURRENCY, stats
    lines = parse_output(out) if out.exists() else []
    assert lines == [], "no line for a request never tried, nor for one the endpoint refused"


@pytest.mark.parametrize("var", ["OPENAI_API_KEY", "MY_TEAM_KEY"])
def test_a_wrong_key_stops_the_run_and_names_its_variable(tmp_path: Path, var: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(N))
    out = tmp_path / "out.jsonl"
    with Simulator.in_thread(SimulatorConfig(api_key="sk-the-right-key-0000000000", latency_ms=20)) as sim:
        extra = ["--concurrency", str(CONCURRENCY)] + (["--api-key-env", var] if var != "OPENAI_API_KEY" else [])
        proc = cli(*run_args(sim.base_url, src, out, *extra), env=cli_env(PLANTED_KEY, var=var))
        assert proc.returncode == 3, proc.stderr
        assert f"rejected the API key from {var}" in proc.stderr, proc.stderr
        _check_stopped_early(sim, out, proc.stderr)
        assert PLANTED_KEY not in proc.stderr + proc.stdout


def test_no_key_at_all_says_the_variable_is_not_set(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(N))
    out = tmp_path / "out.jsonl"
    with Simulator.in_thread(SimulatorConfig(api_key="sk-the-right-key-0000000000")) as sim:
        proc = cli(*run_args(sim.base_url, src, out, "--concurrency", str(CONCURRENCY)), env=cli_env(None))
        assert proc.returncode == 3, proc.stderr
        assert "OPENAI_API_KEY (not set)" in proc.stderr, proc.stderr
        _check_stopped_early(sim, out, proc.stderr)


def test_a_403_stops_the_run_like_a_wrong_key(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(N))
    out = tmp_path / "out.jsonl"
    with Simulator.in_thread(SimulatorConfig(fault_rates={"403": 1.0}, latency_ms=20)) as sim:
        proc = cli(*run_args(sim.base_url, src, out, "--concurrency", str(CONCURRENCY)))
        assert proc.returncode == 3, proc.stderr
        assert "refused access with the API key from OPENAI_API_KEY" in proc.stderr, proc.stderr
        _check_stopped_early(sim, out, proc.stderr)
        assert sim.stats()["responses"] == {"403": sim.stats()["requests"]}


def test_a_403_mid_run_keeps_what_was_done_and_the_rerun_finishes(tmp_path: Path) -> None:
    """The account is refused after 50 answers: the 50 stay, nothing else is written, the rerun resumes."""
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(N))
    out = tmp_path / "out.jsonl"
    with Simulator.in_thread(SimulatorConfig(fault_sequence=("ok",) * 50 + ("403",) * 20, latency_ms=5)) as sim:
        proc = cli(*run_args(sim.base_url, src, out, "--concurrency", str(CONCURRENCY), "--summary-json",
                             tmp_path / "s.json"))
        assert proc.returncode == 3, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = parse_output(out)
        assert len(lines) == 50 and all(line["error"] is None for line in lines)
        assert 51 <= sim.stats()["requests"] <= 50 + CONCURRENCY
    with Simulator.in_thread(SimulatorConfig()) as healthy:  # the account is back
        rerun = cli(*run_args(healthy.base_url, src, out))
        assert rerun.returncode == 0, rerun.stderr
        assert healthy.stats()["requests"] == N - 50
    ids = [line["custom_id"] for line in parse_output(out)]
    assert sorted(ids) == sorted(f"r{i}" for i in range(N))
