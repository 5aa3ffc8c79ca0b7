"""A planted key never shows up in any byte batchchat produces: output, summary, stdout, stderr, any file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import PLANTED_KEY, chat_jobs, cli, cli_env, parse_output, run_args, write_jsonl

from batchchat.simulator import Simulator, SimulatorConfig

# the whole key, and a long piece of it that no masking scheme (sk-...4680) would show
NEEDLES = (PLANTED_KEY.encode(), PLANTED_KEY[3:23].encode())


def _every_byte(tmp_path: Path, stdout: str, stderr: str) -> dict[str, bytes]:
    produced = {"stdout": stdout.encode(), "stderr": stderr.encode()}
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "in.jsonl":
            produced[path.name] = path.read_bytes()
    return produced


def _assert_no_key(produced: dict[str, bytes]) -> None:
    for name, data in produced.items():
        for needle in NEEDLES:
            assert needle not in data, f"the key leaked into {name}"


@pytest.mark.parametrize("progress", ["off", "log", "bar", "auto"])
def test_the_key_never_appears_even_when_the_server_echoes_it(tmp_path: Path, progress: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(300))
    out = tmp_path / "out.jsonl"
    faults = {"echo_headers": 0.2, "500": 0.1, "non_json": 0.05, "503_retry_after": 0.02}
    with Simulator.in_thread(SimulatorConfig(api_key=PLANTED_KEY, fault_rates=faults, latency_ms=5)) as sim:
        proc = cli(*run_args(sim.base_url, src, out, "--summary-json", tmp_path / "summary.json",
                             "--log-interval", "0.05", "--max-attempts", "2", progress=progress))
        echoed = sim.stats()["faults"].get("echo_headers", 0)
    assert proc.returncode == 1, proc.stderr  # the echo_headers 400s fail their lines
    assert echoed > 20
    lines = parse_output(out)
    echo_lines = [line for line in lines if line["error"] and "Request headers" in line["error"]["message"]]
    assert len(echo_lines) == echoed
    # the echo is there, with the key replaced, in the message and in the body kept in the line
    assert all("Bearer [REDACTED]" in line["error"]["message"] for line in echo_lines)
    assert all("[REDACTED]" in str(line["response"]["body"]) for line in echo_lines)
    if progress == "log":
        assert proc.stderr.count("batchchat: ") > 3  # log lines were printed
    _assert_no_key(_every_byte(tmp_path, proc.stdout, proc.stderr))


@pytest.mark.parametrize("progress", ["off", "log"])
def test_a_wrong_key_is_not_repeated_back(tmp_path: Path, progress: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(50))
    with Simulator.in_thread(SimulatorConfig(api_key="sk-the-right-key-0000000000")) as sim:
        proc = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl", "--summary-json", tmp_path / "s.json",
                             "--log-interval", "0.05", progress=progress))
    assert proc.returncode == 3, proc.stderr
    _assert_no_key(_every_byte(tmp_path, proc.stdout, proc.stderr))


def test_a_key_in_a_custom_variable_and_an_echoing_server_on_every_request(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(40))
    with Simulator.in_thread(SimulatorConfig(fault_rates={"echo_headers": 1.0})) as sim:
        proc = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl", "--api-key-env", "TEAM_KEY",
                             "--summary-json", tmp_path / "s.json", "--progress", "log", "--log-interval", "0.05"),
                   env=cli_env(PLANTED_KEY, var="TEAM_KEY"))
    assert proc.returncode == 1, proc.stderr
    assert len(parse_output(tmp_path / "out.jsonl")) == 40
    _assert_no_key(_every_byte(tmp_path, proc.stdout, proc.stderr))
