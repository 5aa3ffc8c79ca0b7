"""The command line as a user calls it: in-process with typer's runner, and as a real process for stdin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from helpers import TEST_KEY, chat_lines, read_output, write_jobs
from typer.testing import CliRunner

from batchchat.cli import app
from batchchat.simulator import Simulator

runner = CliRunner()


def cli(*args: str, key: str | None = TEST_KEY, **env: str):  # type: ignore[no-untyped-def]
    environ = {"OPENAI_API_KEY": key} if key else {}
    environ.update(env)
    return runner.invoke(app, list(args), env=environ)


def test_run_prints_the_summary_and_exits_0(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(12))
    result = cli("run", str(src), "--base-url", sim.base_url, "--progress", "off")
    assert result.exit_code == 0, result.output
    assert "12 succeeded, 0 failed" in result.stdout and "latency" in result.stdout
    assert len(read_output(tmp_path / "in.results.jsonl")) == 12


def test_progress_log_lines_when_not_on_a_terminal(tmp_path: Path, simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(latency_ms=30)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(40))
    result = cli("run", str(src), "--base-url", sim.base_url, "-c", "4", "--log-interval", "0.05")
    assert result.exit_code == 0
    lines = [line for line in result.stderr.splitlines() if " batchchat: " in line and "done (" in line]
    assert len(lines) >= 2
    assert "req/s" in lines[-1] and "tok/min" in lines[-1] and "ETA" in lines[-1] and "retries" in lines[-1]


def test_environment_and_flag_precedence_for_the_base_url(tmp_path: Path, simulator) -> None:  # type: ignore[no-untyped-def]
    """flag > environment > config file > default: each level points at a simulator of its own, and the one
    that received the requests is the one that won (every kind of option: tests/test_defects_config.py)."""
    flag, env, file = simulator(), simulator(), simulator()
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(2))
    config = tmp_path / "batchchat.toml"
    config.write_text(f'base-url = "{file.base_url}"\n')

    def sent() -> tuple[int, int, int]:
        return flag.stats()["requests"], env.stats()["requests"], file.stats()["requests"]

    def run(*args: str, **environ: str) -> None:
        out = tmp_path / f"out{sum(sent())}.jsonl"
        result = cli("run", str(src), "--progress", "off", "-o", str(out), *args, **environ)
        assert result.exit_code == 0, result.output

    run("--config", str(config))
    assert sent() == (0, 0, 2)  # file > default
    run("--config", str(config), OPENAI_BASE_URL=env.base_url)
    assert sent() == (0, 2, 2)  # environment > file
    run("--config", str(config), "--base-url", flag.base_url, OPENAI_BASE_URL=env.base_url)
    assert sent() == (2, 2, 2)  # flag > environment


def test_api_key_env_names_the_variable(tmp_path: Path, simulator) -> None:  # type: ignore[no-untyped-def]
    sim = simulator(api_key="sk-right-key-12345")
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(3))
    ok = cli("run", str(src), "--base-url", sim.base_url, "--api-key-env", "TEAM_KEY", "--progress", "off",
             key=None, TEAM_KEY="sk-right-key-12345")
    assert ok.exit_code == 0, ok.output
    wrong = cli("run", str(src), "--base-url", sim.base_url, "--api-key-env", "TEAM_KEY", "--progress", "off",
                "-o", str(tmp_path / "o.jsonl"), key=None, TEAM_KEY="sk-wrong-key-999999")
    assert wrong.exit_code == 3
    assert "TEAM_KEY" in wrong.stderr and "sk-wrong-key-999999" not in wrong.output


def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    for args, words in [
        (("run", str(tmp_path / "missing.jsonl")), "does not exist"),
        (("run", str(tmp_path)), "is a directory"),
        (("run", "x.jsonl", "--concurrency", "0"), "--concurrency must be at least 1"),
        (("run", "x.jsonl", "--rpm", "-5"), "--rpm must be a positive number"),
        (("run", "x.jsonl", "--bogus"), "No such option"),
    ]:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_validate_reports_every_bad_line_and_the_estimate(tmp_path: Path) -> None:
    src = write_jobs(tmp_path / "in.jsonl", [*chat_lines(3), "{bad", {"model": "m"}, {"prompt": "x"}])
    result = cli("validate", str(src), "--model", "m")
    assert result.exit_code == 2
    assert f"{src}:4: not valid JSON" in result.stderr and f"{src}:5: messages: missing" in result.stderr
    assert "4 valid requests, 2 invalid lines" in result.stdout and "tokens" in result.stdout
    good = write_jobs(tmp_path / "good.jsonl", chat_lines(3))
    assert cli("validate", str(good)).exit_code == 0


def test_stdin_input_as_a_real_process(tmp_path: Path, sim: Simulator) -> None:
    payload = b"".join(orjson.dumps(line) + b"\n" for line in chat_lines(5))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    proc = subprocess.run([sys.executable, "-m", "batchchat", "run", "-", "-o", str(out), "--base-url",
                           sim.base_url, "--progress", "off"], input=payload, capture_output=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert sorted(x["custom_id"] for x in read_output(out)) == [f"r{i}" for i in range(5)]
    assert b"<stdin>" in proc.stdout


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "validate", "serve"):
        assert command in result.stdout


def test_unreadable_input_is_a_usage_error(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # tests run as root here, where file modes do not deny reading: stage the refusal at the open call
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(1))
    real_open = Path.open

    def guarded(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self == src:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded)
    result = cli("run", str(src))
    assert result.exit_code == 2
    assert f"cannot read input {src}: Permission denied" in result.output and "Traceback" not in result.output


HELP_PROBE = """
import contextlib, io, sys
if sys.argv[1] == "eager":  # the renderer's every import done the usual way first
    import typer.rich_utils
sys.argv = ["batchchat", *sys.argv[2:]]
from batchchat.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), contextlib.suppress(SystemExit):
    main()
heavy = ("rich.markdown", "markdown_it", "rich.traceback", "rich.pretty", "anyio", "httpx", "aiohttp", "orjson")
print(",".join(m for m in heavy if m in sys.modules))
print(out.getvalue())
"""


def test_help_renders_the_same_without_the_imports_it_does_not_use() -> None:
    env = {**os.environ, "COLUMNS": "100", "TERMINAL_WIDTH": "100"}
    for args in (["--help"], ["run", "--help"], []):
        lean = subprocess.run([sys.executable, "-c", HELP_PROBE, "lean", *args], capture_output=True, text=True,
                              env=env, timeout=60)
        eager = subprocess.run([sys.executable, "-c", HELP_PROBE, "eager", *args], capture_output=True,
                               text=True, env=env, timeout=60)
        imported, _, text = lean.stdout.partition("\n")
        assert imported == "", lean.stderr
        assert text == eager.stdout.partition("\n")[2] and "Usage: batchchat" in text


@pytest.mark.parametrize("args", [["serve", "--port", "0"], ["run", "x.jsonl", "--simulate"]])
def test_the_simulator_without_its_extra_says_how_to_install_it(args: list[str]) -> None:
    code = ("import sys; sys.modules['httptools'] = None; sys.argv = ['batchchat', *sys.argv[1:]]; "
            "from batchchat.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "pip install 'batchchat[simulator]'" in proc.stderr and "Traceback" not in proc.stderr


def test_sim_models_lets_a_rehearsal_use_a_self_hosted_model_name(tmp_path: Path) -> None:
    body = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    lines = [{"custom_id": f"q{i}", "url": "/v1/chat/completions", "body": body} for i in range(3)]
    src = write_jobs(tmp_path / "in.jsonl", lines)
    refused = cli("run", str(src), "--simulate", "--progress", "off", "-o", str(tmp_path / "a.jsonl"))
    assert refused.exit_code == 1, refused.output  # the default simulator serves OpenAI's models only
    refusals = read_output(tmp_path / "a.jsonl")
    assert {r["error"]["code"] for r in refusals} == {"http_404"}
    assert {r["response"]["body"]["error"]["code"] for r in refusals} == {"model_not_found"}
    served = cli("run", str(src), "--simulate", "--sim-models", "llama-3.1-8b", "--progress", "off",
                 "-o", str(tmp_path / "b.jsonl"))
    assert served.exit_code == 0, served.output
    assert len(read_output(tmp_path / "b.jsonl")) == 3
    anything = cli("run", str(src), "--simulate", "--sim-models", "*", "--progress", "off",
                   "-o", str(tmp_path / "c.jsonl"))
    assert anything.exit_code == 0, anything.output
    empty = cli("run", str(src), "--simulate", "--sim-models", " , ", "--progress", "off")
    assert empty.exit_code == 2 and "--sim-models" in empty.output
