"""Every fault the simulator can inject, through the real CLI: the job completes, each request succeeds or
gets an error line that says why after the configured attempts, none is lost, and --summary-json agrees
with the file."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import chat_jobs, cli, parse_output, run_args, write_jsonl

from batchchat.simulator import Simulator, SimulatorConfig

# what an attempt that met each fault is called in the error line
CODES = {
    "500": "http_500",
    "502": "http_502",
    "503": "http_503",
    "503_retry_after": "http_503",
    "429": "rate_limited",
    "429_retry_after": "rate_limited",
    "drop": "connection",
    "hang": "timeout",
    "truncate": "connection",
    "non_json": "invalid_json",
}
WHY = {  # and what its message says
    "http_500": "HTTP 500: ", "http_502": "HTTP 502: ", "http_503": "HTTP 503: ", "rate_limited": "HTTP 429: ",
    "connection": "", "timeout": "timeout: no answer within 0.3 s",
    "invalid_json": "HTTP 200 with a body that is not JSON",
}
TIMEOUT = "0.3"  # seconds: a hung request is given up after this


def _run(tmp_path: Path, faults: dict[str, float], n: int, attempts: int, **config: Any) -> tuple[Any, dict]:
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(n))
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    with Simulator.in_thread(SimulatorConfig(fault_rates=faults, latency_ms=2, **config)) as sim:
        proc = cli(*run_args(sim.base_url, src, out, "--max-attempts", str(attempts), "--timeout", TIMEOUT,
                             "--summary-json", summary, "--concurrency", "32", "--max-wait", "0.05"), timeout=90)
        stats = sim.stats()
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, _check(out, summary, n, attempts, proc.returncode, stats)


def _check(out: Path, summary_path: Path, n: int, attempts: int, code: int, stats: dict) -> dict:
    lines = parse_output(out)
    counts = Counter(line["custom_id"] for line in lines)
    assert set(counts) == {f"r{i}" for i in range(n)}, "a request was lost"
    assert max(counts.values()) == 1, "a request has two lines"
    ok = [line for line in lines if line["error"] is None]
    bad = [line for line in lines if line["error"] is not None]
    for line in ok:
        assert line["response"]["status_code"] == 200 and line["response"]["body"]["choices"]
        assert 1 <= line["attempts"] <= attempts
    for line in bad:
        error = line["error"]
        assert line["attempts"] == attempts, line
        assert error["message"].startswith(f"gave up after {attempts} attempts: {WHY[error['code']]}"), error
    summary = orjson.loads(summary_path.read_bytes())
    assert (summary["total"], summary["succeeded"], summary["failed"], summary["not_finished"]) == \
        (n, len(ok), len(bad), 0)
    assert summary["attempts"] == sum(line["attempts"] for line in lines)
    assert summary["errors_by_code"] == dict(Counter(line["error"]["code"] for line in bad))
    assert summary["exit_code"] == code == (1 if bad else 0)
    # every attempt the server saw was one the client counted (a dropped pooled connection may not reach it)
    assert n <= stats["requests"] <= summary["attempts"]
    return {"ok": len(ok), "failed": len(bad), "codes": Counter(line["error"]["code"] for line in bad),
            "attempts": summary["attempts"], "server_requests": stats["requests"]}


@pytest.mark.parametrize("kind", list(CODES))
def test_each_fault_at_20_percent_completes_the_job(tmp_path: Path, kind: str) -> None:
    _, figures = _run(tmp_path, {kind: 0.2}, n=150, attempts=4)
    assert set(figures["codes"]) <= {CODES[kind]}
    assert figures["attempts"] > 150  # the faults were met, and retried
    assert figures["ok"] >= 140  # 0.2^4: almost every request gets through in 4 attempts


@pytest.mark.parametrize("kind", [kind for kind in CODES if kind != "hang"])
def test_a_fault_on_every_attempt_ends_in_an_error_line_that_says_why(tmp_path: Path, kind: str) -> None:
    _, figures = _run(tmp_path, {kind: 1.0}, n=4, attempts=3)
    assert figures["failed"] == 4 and figures["codes"] == {CODES[kind]: 4}
    assert figures["attempts"] == 12


def test_a_hang_on_every_attempt_stops_the_run_as_a_dead_endpoint(tmp_path: Path) -> None:
    # timeouts in a row with no answer at all since the start: nothing can succeed (#22 item 4, tests/test_stops.py)
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(4))
    with Simulator.in_thread(SimulatorConfig(fault_rates={"hang": 1.0})) as sim:
        proc = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl", "--max-attempts", "3", "--timeout", TIMEOUT,
                             "--concurrency", "32", "--max-wait", "0.05"), timeout=90)
    assert proc.returncode == 7 and f"timed out at {sim.base_url}/chat/completions" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_mixed_faults_complete_the_job(tmp_path: Path) -> None:
    faults = dict.fromkeys(CODES, 0.03)  # 30% of attempts meet one fault or another
    proc, figures = _run(tmp_path, faults, n=300, attempts=5, seed=3)
    assert set(figures["codes"]) <= set(CODES.values())
    assert figures["ok"] >= 295
    assert "exit code" in proc.stdout


def test_a_rerun_retries_only_the_failed_and_leaves_one_line_per_id(tmp_path: Path) -> None:
    faults = dict.fromkeys(CODES, 0.06)  # 60%, two attempts: about a third fail
    proc, first = _run(tmp_path, faults, n=120, attempts=2, seed=5)
    assert proc.returncode == 1 and first["failed"] > 10
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    with Simulator.in_thread(SimulatorConfig()) as healthy:
        rerun = cli(*run_args(healthy.base_url, tmp_path / "in.jsonl", out, "--summary-json", summary))
        assert rerun.returncode == 0, rerun.stderr
        assert healthy.stats()["requests"] == first["failed"]  # the successes were not bought again
    data = orjson.loads(summary.read_bytes())
    assert (data["succeeded"], data["skipped_already_done"]) == (first["failed"], first["ok"])
    lines = parse_output(out)
    assert len(lines) == 120 and all(line["error"] is None for line in lines)
