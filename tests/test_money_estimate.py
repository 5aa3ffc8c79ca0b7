"""The estimate before a run: per model and in total, learned from a previous output, and checked against the real
cost of simulator runs of the demo job and of a held-out job."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from cli_process import cli

from batchchat.config.settings import JobDefaults
from batchchat.input.parse import Job, read_jobs
from batchchat.money.cost import CostTally
from batchchat.money.estimate import DEFAULT_COMPLETION_RATIO, estimate_jobs, learn_completion_ratio
from batchchat.money.prices import PriceTable
from batchchat.output.lines import iter_results
from batchchat.pacing.tokens import prompt_estimate

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "jobs" / "demo.jsonl"
DEMO_DEFAULTS = JobDefaults(model="gpt-4o-mini", system="You are terse.", max_tokens=60)
DEMO_FLAGS = ("--model", "gpt-4o-mini", "--max-tokens", "60", "--system", "You are terse.")
TABLE = PriceTable.load()


def load_jobs(path: Path, defaults: JobDefaults = DEMO_DEFAULTS) -> list[Job]:
    jobs = [job for job in read_jobs(path, defaults) if isinstance(job, Job)]
    assert jobs
    return jobs


def small_job(tmp_path: Path) -> list[Job]:
    lines = [
        {"custom_id": "c1", "model": "gpt-4o-mini", "max_tokens": 100, "n": 2,
         "messages": [{"role": "user", "content": "x" * 400}]},
        {"custom_id": "c2", "model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
        {"custom_id": "r1", "method": "POST", "url": "/v1/responses",
         "body": {"model": "gpt-4o-mini", "input": "y" * 40, "max_output_tokens": 50}},
        {"custom_id": "e1", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "text-embedding-3-small", "input": "z" * 4000}},
        {"custom_id": "u1", "model": "my-model", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]},
    ]
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return load_jobs(path, JobDefaults())


def test_estimate_per_model_and_total(tmp_path: Path) -> None:
    jobs = small_job(tmp_path)
    estimate = estimate_jobs(jobs, TABLE)
    mini = estimate.models["gpt-4o-mini"]
    assert mini.requests == 3
    assert mini.prompt_tokens == sum(prompt_estimate(j) for j in jobs if j.body["model"] == "gpt-4o-mini")
    assert mini.completion_ceiling == 100 * 2 + 50 + 50
    assert mini.expected_completion == round(300 * DEFAULT_COMPLETION_RATIO) and not mini.ratio_learned
    costs = mini.costs()
    assert costs["online_ceiling_usd"] == pytest.approx((mini.prompt_tokens * 0.15 + 300 * 0.60) / 1e6, rel=1e-12)
    assert costs["online_expected_usd"] == pytest.approx((mini.prompt_tokens * 0.15 + 150 * 0.60) / 1e6, rel=1e-12)
    assert costs["batch_ceiling_usd"] == pytest.approx(costs["online_ceiling_usd"] / 2, rel=1e-12)
    embed = estimate.models["text-embedding-3-small"]
    assert (embed.prompt_tokens, embed.completion_ceiling, embed.expected_completion) == (1000, 0, 0)
    assert embed.costs()["online_expected_usd"] == embed.costs()["online_ceiling_usd"] == pytest.approx(0.00002)
    unknown = estimate.models["my-model"]
    assert unknown.costs() == {key: None for key in unknown.costs()}  # never free
    total = estimate.total()
    assert total["requests"] == 5 and estimate.unknown == ["my-model"]
    assert total["completion_ceiling"] == 310
    assert total["online_ceiling_usd"] == pytest.approx(costs["online_ceiling_usd"] + 0.00002)
    data = estimate.to_dict()
    assert data["models"]["my-model"]["price_known"] is False and data["unknown_price"] == ["my-model"]
    assert data["total"] == total
    text = estimate.render()
    assert text.splitlines()[0].split() == ["model", "requests", "prompt", "tok", "completion", "tok", "cost",
                                           "online", "cost", "batch"]
    assert any(line.startswith("my-model") and "unknown" in line for line in text.splitlines())
    assert any(line.startswith("total ") for line in text.splitlines())
    assert "unknown price for: my-model" in text
    assert f"prices as of {TABLE.as_of}" in text


def test_learned_ratio_from_a_previous_output(tmp_path: Path) -> None:
    jobs = small_job(tmp_path)
    output = tmp_path / "out.jsonl"
    lines = [
        {"id": "a", "custom_id": "c1", "error": None, "usage": {"prompt_tokens": 110, "completion_tokens": 80}},
        {"id": "b", "custom_id": "c2", "error": None, "usage": None,  # usage only in the body: a Batch API line
         "response": {"status_code": 200, "body": {"usage": {"prompt_tokens": 9, "completion_tokens": 40}}}},
        {"id": "c", "custom_id": "r1", "error": {"code": "server_error", "message": "x"}, "usage": None},  # failed
        {"id": "d", "custom_id": "e1", "error": None, "usage": {"prompt_tokens": 1000}},  # embeddings: no cap
        {"id": "e", "custom_id": "gone", "error": None, "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
        {"id": "f", "custom_id": "u1", "error": None, "usage": {"prompt_tokens": 5, "completion_tokens": 99}},
    ]
    output.write_text("".join(json.dumps(line) + "\n" for line in lines))
    learned = learn_completion_ratio(output, {job.custom_id: job for job in jobs})
    assert learned == {"gpt-4o-mini": pytest.approx((80 + 40) / (200 + 50)), "my-model": 1.0}  # capped at the cap
    assert learned.by_cap == {("gpt-4o-mini", 200): 0.4, ("gpt-4o-mini", 50): 0.8, ("my-model", 10): 1.0}
    estimate = estimate_jobs(jobs, TABLE, learned)
    mini = estimate.models["gpt-4o-mini"]
    # per cap: c1 (cap 100 × n 2) at 0.4, c2 and r1 (cap 50) at 0.8
    assert mini.ratio_learned and mini.expected_completion == 200 * 0.4 + 50 * 0.8 + 50 * 0.8
    assert mini.completion_ratio == pytest.approx(160 / 300)
    # a cap the output never had falls back to the model's ratio; a plain dict works too
    other = estimate_jobs([Job("x", "/v1/chat/completions", {"model": "gpt-4o-mini", "max_tokens": 70,
                                                              "messages": [{"role": "user", "content": "q"}]}, 1)],
                          TABLE, learned)
    assert other.models["gpt-4o-mini"].expected == pytest.approx(70 * 120 / 250)
    assert estimate_jobs(jobs, TABLE, {"gpt-4o-mini": 0.25}).models["gpt-4o-mini"].expected_completion == 75
    assert "learned from a previous output" in estimate.render()
    assert learn_completion_ratio(tmp_path / "absent.jsonl", {}) == {}
    assert learn_completion_ratio(output, {"c1": ("gpt-4o-mini", 100)}) == {"gpt-4o-mini": 0.8}


def simulate(jobs_path: Path, output: Path) -> None:
    done = cli("run", jobs_path, "--simulate", *DEMO_FLAGS, "-o", output, "--progress", "off", cwd=REPO)
    assert done.returncode == 0, done.stderr


def real_cost(output: Path, jobs: list[Job]) -> float:
    """The cost of an output at the table's prices, from the usage the simulator billed each answer."""
    models = {job.custom_id: job.body["model"] for job in jobs}
    tally = CostTally(TABLE)
    for line in iter_results(output):
        assert line["error"] is None
        tally.add(models[line["custom_id"]], line["usage"])
    assert not tally.unknown
    return tally.total


def held_out_job(path: Path) -> Path:
    """A mixed job the ratio was not learned on: other prompts, the same kinds of request as the demo."""
    rng = random.Random(11)
    words = ["orbit", "ferment", "granite", "lichen", "tariff", "violin", "plankton", "axiom", "harbour", "quartz"]
    lines = []
    for i in range(200):
        topic = " ".join(rng.sample(words, rng.randint(1, 3)))
        kind = rng.randrange(4)
        if kind == 0:
            lines.append({"custom_id": f"h{i}", "model": "gpt-4o-mini", "max_tokens": 120,
                          "messages": [{"role": "system", "content": "Answer in two sentences."},
                                       {"role": "user", "content": f"How does {topic} work?"}]})
        elif kind == 1:
            lines.append({"custom_id": f"h{i}", "model": "gpt-4o-mini", "max_tokens": 30,
                          "messages": [{"role": "user", "content": f"Name an essay about {topic}."}]})
        elif kind == 2:
            lines.append({"custom_id": f"h{i}", "prompt": f"Give three odd facts about {topic}."})
        else:
            lines.append({"custom_id": f"h{i}", "method": "POST", "url": "/v1/embeddings",
                          "body": {"model": "text-embedding-3-small", "input": f"Notes on {topic}, part {i}"}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_demo_estimate_within_ten_percent_of_the_real_cost(tmp_path: Path) -> None:
    """Learned from a previous run's output, the estimate of the demo job is within 10% of what a simulator run of
    it costs, and so is the estimate of a held-out job with the ratio learned on the demo."""
    demo_jobs = load_jobs(DEMO)
    first = tmp_path / "first.jsonl"
    simulate(DEMO, first)
    learned = learn_completion_ratio(first, {job.custom_id: job for job in demo_jobs})
    assert set(learned) == {"gpt-4o-mini"}

    second = tmp_path / "second.jsonl"
    simulate(DEMO, second)
    estimate = estimate_jobs(demo_jobs, TABLE, learned).total()
    real = real_cost(second, demo_jobs)
    assert estimate["online_expected_usd"] == pytest.approx(real, rel=0.10)
    assert estimate["online_ceiling_usd"] >= real

    held_out = held_out_job(tmp_path / "held_out.jsonl")
    held_jobs = load_jobs(held_out)
    held_output = tmp_path / "held_out.out.jsonl"
    simulate(held_out, held_output)
    held_estimate = estimate_jobs(held_jobs, TABLE, learned).total()
    held_real = real_cost(held_output, held_jobs)
    assert held_estimate["online_expected_usd"] == pytest.approx(held_real, rel=0.10)
    assert held_estimate["online_ceiling_usd"] >= held_real
