"""Money in a run against the simulator: each line's cost, the summary's cost by model, unknown prices said once
and never free, a user price file over the shipped table, the estimate before a run, out-of-credit (exit 6) and
bad money input (exit 2 before anything is sent)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from helpers import chat_lines, read_output, run_options, write_jobs
from typer.testing import CliRunner

import batchchat
from batchchat import api
from batchchat.cli.commands import app
from batchchat.config.settings import EndpointConfig
from batchchat.errors import ExitCode, UsageError
from batchchat.http.outcomes import Fatal, Retryable, classify
from batchchat.money.cost import tokens_cost, usage_tokens
from batchchat.money.prices import PriceTable
from batchchat.report.counters import Counters
from batchchat.report.progress import Progress
from batchchat.secrets import Redactor
from batchchat.simulator import Simulator

TABLE = PriceTable.load()
runner = CliRunner()


def stats(sim: Simulator) -> dict:
    return httpx.get(sim.base_url.removesuffix("/v1") + "/stats").json()


def line_cost(model: str, usage: dict, table: PriceTable = TABLE) -> float:
    price = table.price_for(model)
    assert price is not None
    return tokens_cost(price, usage_tokens(usage)).total


def test_each_line_carries_its_cost_and_the_summary_sums_them_by_model(tmp_path: Path, sim: Simulator) -> None:
    lines = chat_lines(20)
    for i, line in enumerate(lines):
        line["model"] = "gpt-4.1" if i % 2 else "gpt-4o-mini"
    job = write_jobs(tmp_path / "job.jsonl", lines)
    out = tmp_path / "out.jsonl"
    summary = batchchat.run(job, out, **run_options(sim, summary_json=tmp_path / "s.json"))
    assert summary.exit_code == 0
    by_model: dict[str, float] = {}
    for line in read_output(out):
        model = line["response"]["body"]["model"]
        assert line["cost_usd"] == pytest.approx(line_cost(model, line["usage"]), rel=1e-6)
        by_model[model] = by_model.get(model, 0.0) + line["cost_usd"]
        assert list(line)[:3] == ["id", "custom_id", "error"]  # the head the resume reads is unchanged
    cost = orjson.loads((tmp_path / "s.json").read_bytes())["cost"]
    assert set(cost["by_model"]) == {"gpt-4.1", "gpt-4o-mini"}
    for model, total in by_model.items():
        assert cost["by_model"][model]["total_usd"] == pytest.approx(total, rel=1e-6)
    assert cost["total_usd"] == pytest.approx(sum(by_model.values()), rel=1e-6)
    parts = cost["prompt_usd"] + cost["cached_usd"] + cost["completion_usd"]
    assert parts == pytest.approx(cost["total_usd"], rel=1e-9)
    assert cost["cap"] is None and cost["unknown_price"] == {}
    assert "  cost       $" in summary.render()


def test_unknown_model_is_cost_unknown_said_once_and_never_free(tmp_path: Path,
                                                               simulator: Callable[..., Simulator]) -> None:
    sim = simulator(models=("gpt-4o-mini", "house-llama"))
    lines = chat_lines(10)
    for line in lines[:4]:
        line["model"] = "house-llama"
    job = write_jobs(tmp_path / "job.jsonl", lines)
    out = tmp_path / "out.jsonl"
    summary = batchchat.run(job, out, **run_options(sim))
    assert summary.exit_code == 0
    for line in read_output(out):
        if line["response"]["body"]["model"] == "house-llama":
            assert line["cost_usd"] is None  # unknown, not zero
        else:
            assert line["cost_usd"] > 0
    assert summary.cost is not None
    assert summary.cost["unknown_price"]["house-llama"]["requests"] == 4
    assert "house-llama" not in summary.cost["by_model"]
    text = summary.render()
    assert text.count("house-llama") == 1
    assert "unknown for house-llama" in text and "not counted" in text

    # with a cap it cannot be kept: exit 2 before anything is sent
    before = stats(sim)["requests"]
    with pytest.raises(UsageError, match="no price for house-llama"):
        batchchat.run(job, tmp_path / "capped.jsonl", **run_options(sim, max_cost=1))
    assert stats(sim)["requests"] == before


def test_a_user_price_file_overrides_a_shipped_price(tmp_path: Path, sim: Simulator) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."gpt-4o-mini"]\ninput = 100.0\noutput = 1000.0\n')
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(5))
    out = tmp_path / "out.jsonl"
    summary = batchchat.run(job, out, **run_options(sim, prices=prices))
    mine = PriceTable.load(prices)
    total = 0.0
    for line in read_output(out):
        expected = line_cost("gpt-4o-mini", line["usage"], mine)
        assert line["cost_usd"] == pytest.approx(expected, rel=1e-6)
        assert line["cost_usd"] > 100 * line_cost("gpt-4o-mini", line["usage"])  # not the shipped price
        total += expected
    assert summary.cost is not None and summary.cost["total_usd"] == pytest.approx(total, rel=1e-6)


def test_out_of_credit_stops_the_run_at_once_with_exit_6(tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = simulator(fault_sequence=["ok"] * 3 + ["insufficient_quota"] * 200)
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(100))
    summary = batchchat.run(job, tmp_path / "out.jsonl", **run_options(sim, concurrency=2))
    assert summary.exit_code == ExitCode.OUT_OF_CREDIT == 6
    assert summary.stopped is not None and "out of credit" in summary.stopped
    assert summary.retries == 0  # not a rate limit: never retried
    assert stats(sim)["requests"] <= 3 + 2 + 1  # the answered ones, then at most what was in flight
    assert summary.not_finished > 90


def test_insufficient_quota_is_fatal_and_a_rate_limit_is_not() -> None:
    endpoint = EndpointConfig(base_url="http://127.0.0.1:1/v1")
    body = orjson.dumps({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                                   "param": None, "code": "insufficient_quota"}})
    outcome = classify(429, body, {}, Redactor(None), endpoint)
    assert isinstance(outcome, Fatal) and outcome.reason == "insufficient_quota"
    assert outcome.exit_code == ExitCode.OUT_OF_CREDIT
    limited = orjson.dumps({"error": {"message": "Rate limit reached", "type": "requests",
                                      "code": "rate_limit_exceeded"}})
    assert isinstance(classify(429, limited, {}, Redactor(None), endpoint), Retryable)
    # the words in a message alone do not make it a billing error
    mention = orjson.dumps({"error": {"message": "not insufficient_quota", "code": "rate_limit_exceeded"}})
    assert isinstance(classify(429, mention, {}, Redactor(None), endpoint), Retryable)


@pytest.mark.parametrize(("args", "file_text", "words"), [
    (["--max-cost", "0"], None, "max_cost"),
    (["--max-cost", "-3"], None, "max_cost"),
    (["--max-cost", "lots"], None, "max_cost"),
    (["--prices", "{prices}"], "[models.x\ninput = 1", "not valid TOML"),
    (["--prices", "{prices}"], '[models."gpt-4o-mini"]\ninput = -1\noutput = 2\n',
     'models."gpt-4o-mini".input'),
    (["--prices", "{prices}"], '[models."gpt-4o-mini"]\ninput = "cheap"\noutput = 2\n', "must be a number"),
])
def test_bad_money_input_exits_2_before_anything_is_sent(tmp_path: Path, sim: Simulator, args: list[str],
                                                         file_text: str | None, words: str) -> None:
    prices = tmp_path / "prices.toml"
    if file_text is not None:
        prices.write_text(file_text)
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(3))
    argv = ["run", str(job), "--base-url", sim.base_url, "--progress", "off",
            *[a.format(prices=prices) for a in args]]
    result = runner.invoke(app, argv, env={"OPENAI_API_KEY": "sk-test-0123456789abcdef"})
    assert result.exit_code == 2, result.output
    assert words in result.output
    if file_text is not None:
        assert str(prices) in result.output  # the message names the file
    assert stats(sim)["requests"] == 0


def test_validate_with_a_bad_price_file_exits_2_naming_it(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('{"models": {"gpt-4o-mini": {"input": 1}}}')
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(3))
    result = runner.invoke(app, ["validate", str(job), "--prices", str(prices)])
    assert result.exit_code == 2
    assert f'{prices}: models."gpt-4o-mini".output: missing' in result.output


def test_max_cost_and_prices_from_the_config_file(tmp_path: Path, sim: Simulator) -> None:
    prices = tmp_path / "p.json"
    prices.write_text('{"models": {"gpt-4o-mini": {"input": 50, "output": 50}}}')
    config = tmp_path / "c.toml"
    config.write_text(f'max-cost = 0.01\nprices = "{prices}"\n')
    settings = api.build_settings({"input": "x.jsonl"}, environ={}, config_file=config)
    assert settings.max_cost == 0.01 and settings.prices == prices
    config.write_text("max-cost = -1\n")
    with pytest.raises(UsageError, match="max-cost: must be an amount in USD"):
        api.build_settings({"input": "x.jsonl"}, environ={}, config_file=config)


def test_validate_prints_the_estimate_learned_from_an_earlier_output(tmp_path: Path, sim: Simulator) -> None:
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(40, max_tokens=100))
    before = runner.invoke(app, ["validate", str(job)])
    assert before.exit_code == 0, before.output
    assert "gpt-4o-mini" in before.output and "cost online" in before.output and "guessed" in before.output
    summary = batchchat.run(job, **run_options(sim))  # the default output path, which validate reads
    after = runner.invoke(app, ["validate", str(job)])
    assert "learned from a previous output" in after.output
    estimate = api.estimate(job)
    expected = estimate.total()["online_expected_usd"]
    assert summary.cost is not None
    assert expected == pytest.approx(summary.cost["total_usd"], rel=0.10)  # the goal: within 10%


def test_progress_lines_show_the_money_spent(tmp_path: Path) -> None:
    counters = Counters(total=10)
    stream = io.StringIO()
    progress = Progress(counters, "log", stream=stream, spent=lambda: 0.01234)
    progress.refresh()
    assert "$0.0123 spent" in stream.getvalue()  # usd(): three significant digits
    quiet = io.StringIO()
    Progress(counters, "log", stream=quiet).refresh()
    assert "spent" not in quiet.getvalue()
