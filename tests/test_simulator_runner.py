"""Starting the simulator: in a thread, in a child process, from the CLI; the latency model."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from batchchat.cli import app
from batchchat.simulator import Simulator, SimulatorConfig
from batchchat.simulator.command import parse_faults, parse_model_limits
from batchchat.simulator.runner import config_to_args
from batchchat.simulator.server import SimulatorApp

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_in_thread_start_stop() -> None:
    with Simulator.in_thread(SimulatorConfig()) as sim:
        assert sim.base_url.startswith("http://127.0.0.1:") and sim.base_url.endswith("/v1")
        assert httpx.post(sim.base_url + "/chat/completions", json=BODY).status_code == 200
        assert sim.stats()["requests"] == 1
    with pytest.raises(httpx.ConnectError):
        httpx.post(sim.base_url + "/chat/completions", json=BODY)


def test_in_subprocess_start_stop_and_stats() -> None:
    cfg = SimulatorConfig(rpm=6000, fault_sequence=("500",), api_key="k")
    with Simulator.in_subprocess(cfg, cpu=0) as sim:
        headers = {"authorization": "Bearer k"}
        assert httpx.post(sim.base_url + "/chat/completions", json=BODY, headers=headers).status_code == 500
        r = httpx.post(sim.base_url + "/chat/completions", json=BODY, headers=headers)
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "6000"
        stats = sim.stats()
        assert stats["requests"] == 2 and stats["faults"] == {"500": 1}
        sim.reset_stats()
        assert sim.stats()["requests"] == 0
        proc = sim._process
    assert proc is not None and proc.returncode is not None


def test_config_round_trips_through_flags() -> None:
    cfg = SimulatorConfig(
        rpm=500,
        tpm=200_000,
        limit_window=0.5,
        rate_limit_headers=False,
        model_limits={"gpt-4o": (100, None), "o3": (None, 5000), "gpt-5": (7, 9000)},
        limit_kind="minute",
        retry_after_style="litellm",
        request_id_header="x-litellm-call-id",
        models=("gpt-4o-mini", "my-model"),
        workers=3,
        api_key="K",
        seed=3,
        latency_ms=200,
        latency_max_ms=2000,
        ms_per_token=5,
        jitter=0.1,
        fault_rates={"500": 0.05, "drop": 0.01},
        fault_sequence=("500", "ok", "drop"),
        capacity=64,
        overload_at=256,
    )
    args = config_to_args(cfg)
    captured: list[SimulatorConfig] = []
    import batchchat.simulator.runner as runner

    original = runner.serve_forever
    runner.serve_forever = lambda config, announce=True: captured.append(config)
    try:
        result = CliRunner().invoke(app, ["serve", *args])
    finally:
        runner.serve_forever = original
    assert result.exit_code == 0, result.output
    assert captured == [cfg]
    plain = SimulatorConfig()
    assert "--models" not in config_to_args(plain) and "--workers" not in config_to_args(plain)
    captured.clear()
    runner.serve_forever = lambda config, announce=True: captured.append(config)
    try:
        result = CliRunner().invoke(app, ["serve", *config_to_args(plain)])
    finally:
        runner.serve_forever = original
    assert result.exit_code == 0, result.output
    assert captured == [plain]


def test_serve_help_and_bad_fault() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0
    flags = ("--rpm", "--tpm", "--limit-window", "--no-rate-limit-headers", "--fault", "--overload-at", "--model-limit",
             "--limit-kind", "--retry-after-style", "--request-id-header", "--models", "--workers")
    for flag in flags:
        assert flag in result.output
    result = CliRunner().invoke(app, ["serve", "--fault", "nope=0.5"])
    assert result.exit_code == 2
    assert parse_faults(["500=0.05", "drop=0.01"]) == {"500": 0.05, "drop": 0.01}
    assert parse_model_limits(["gpt-4o=500,30000", "o3=,20000", "ft:gpt-4o:x=7,", "gpt-5=9"]) == {
        "gpt-4o": (500, 30000),
        "o3": (None, 20000),
        "ft:gpt-4o:x": (7, None),
        "gpt-5": (9, None),
    }
    for bad in (["--model-limit", "gpt-4o"], ["--model-limit", "=1,2"], ["--model-limit", "m=a,b"],
                ["--limit-kind", "sliding"], ["--retry-after-style", "azure"], ["--workers", "0"],
                ["--request-id-header", "x id"], ["--models", ","]):
        result = CliRunner().invoke(app, ["serve", *bad])
        assert result.exit_code == 2, (bad, result.output)


def test_latency_model_and_saturation() -> None:
    app_ = SimulatorApp(SimulatorConfig(latency_ms=100, ms_per_token=5))
    assert app_._delay(10) == pytest.approx(0.150)
    jittered = SimulatorApp(SimulatorConfig(latency_ms=100, latency_max_ms=200, jitter=0.1, seed=1))
    delays = [jittered._delay(0) for _ in range(200)]
    assert min(delays) >= 0.09 and max(delays) <= 0.22 and len(set(delays)) > 100
    again = SimulatorApp(SimulatorConfig(latency_ms=100, latency_max_ms=200, jitter=0.1, seed=1))
    assert delays == [again._delay(0) for _ in range(200)]
    saturated = SimulatorApp(SimulatorConfig(latency_ms=100, capacity=4))
    saturated.stats.in_flight = 4
    assert saturated._delay(0) == pytest.approx(0.1)
    saturated.stats.in_flight = 8
    assert saturated._delay(0) == pytest.approx(0.2)


def test_delayed_answer_over_http() -> None:
    with Simulator.in_thread(SimulatorConfig(latency_ms=30)) as sim:
        r = httpx.post(sim.base_url + "/chat/completions", json=BODY)
        assert r.status_code == 200 and r.elapsed.total_seconds() >= 0.025
