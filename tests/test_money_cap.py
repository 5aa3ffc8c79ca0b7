"""The spending cap (`--max-cost`): never passed, measured from what the simulator billed, with faults and retries;
most of it used when the job costs more; a rerun with a higher cap resumes; the guard's accounting per attempt."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from helpers import read_output, run_options, write_jobs

import batchchat
from batchchat.config.settings import JobDefaults
from batchchat.errors import ExitCode
from batchchat.http.outcomes import Failed, Outcome, Retryable, Success
from batchchat.input.parse import Job, parse_line
from batchchat.money.cost import tokens_cost, usage_tokens
from batchchat.money.guard import Spending
from batchchat.money.ledger import LocalLedger
from batchchat.money.prices import PriceTable
from batchchat.pacing.tokens import prompt_estimate
from batchchat.simulator import Simulator

TABLE = PriceTable.load()
MODELS = ("gpt-4o-mini", "gpt-4.1")


def mixed_lines(n: int, max_tokens: int = 64) -> list[dict[str, Any]]:
    """`n` chat requests over two models of different prices."""
    return [
        {"custom_id": f"q{i}", "model": MODELS[i % 3 == 0], "max_tokens": max_tokens,
         "messages": [{"role": "user", "content": f"Tell me something about the number {i}, briefly." * (1 + i % 4)}]}
        for i in range(n)
    ]


def billed_usd(sim: Simulator) -> float:
    """What the simulator billed (its /stats usage per model) at the shipped prices."""
    stats = httpx.get(sim.base_url.removesuffix("/v1") + "/stats").json()
    total = 0.0
    for model, row in stats["models"].items():
        if row["prompt_tokens"] or row["completion_tokens"]:
            price = TABLE.price_for(model)
            assert price is not None, model
            total += tokens_cost(price, usage_tokens({"prompt_tokens": row["prompt_tokens"],
                                                      "completion_tokens": row["completion_tokens"]})).total
    return total


FAULTS = {"500": 0.05, "503": 0.03, "429": 0.03, "drop": 0.01}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_cap_is_never_passed_with_faults_and_retries(tmp_path: Path, simulator: Callable[..., Simulator],
                                                        seed: int) -> None:
    lines = mixed_lines(400)  # a cap some 30 requests large: the last one that does not fit is a small share
    job = write_jobs(tmp_path / "job.jsonl", lines)
    # the whole job, fault-free, to set a cap well below its cost
    full = simulator(seed=seed)
    whole = batchchat.run(job, tmp_path / "full.jsonl", **run_options(full))
    assert whole.exit_code == 0
    job_usd = billed_usd(full)
    cap = round(job_usd * 0.4, 6)

    sim = simulator(seed=seed, fault_rates=FAULTS)
    summary = batchchat.run(job, tmp_path / "out.jsonl", **run_options(sim, max_cost=cap, concurrency=16))
    billed = billed_usd(sim)
    assert summary.exit_code == ExitCode.SPENDING_CAP
    assert summary.retries > 0  # faults were retried, and every paid attempt counted
    assert summary.cost is not None and summary.cost["cap"]["reached"]
    assert billed <= cap, (billed, cap)
    assert summary.cost["spent_usd"] <= cap + 1e-12
    assert summary.cost["spent_usd"] >= 0.95 * cap
    # the ledger is exact: what the simulator billed, plus each dropped connection at its full reservation (a
    # provider may have billed it; this simulator does not)
    assert summary.cost["spent_usd"] - summary.cost["unknown_fate_usd"] == pytest.approx(billed, abs=1e-7)
    assert summary.not_finished > 0
    assert summary.cost["cap"]["requests_left"] == summary.not_finished


def test_most_of_the_cap_is_used_without_unbilled_faults(tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    lines = mixed_lines(300)
    job = write_jobs(tmp_path / "job.jsonl", lines)
    sim = simulator(seed=7, fault_rates={"500": 0.05, "429": 0.05})
    cap = 0.02
    summary = batchchat.run(job, tmp_path / "out.jsonl", **run_options(sim, max_cost=cap, concurrency=32))
    billed = billed_usd(sim)
    assert summary.exit_code == ExitCode.SPENDING_CAP
    assert 0.95 * cap <= billed <= cap, (billed, cap)
    assert summary.cost is not None and summary.cost["unknown_fate_attempts"] == 0
    assert abs(summary.cost["spent_usd"] - billed) < 1e-7  # the ledger and the provider agree


def test_a_rerun_with_a_higher_cap_resumes(tmp_path: Path, sim: Simulator) -> None:
    job = write_jobs(tmp_path / "job.jsonl", mixed_lines(120))
    out = tmp_path / "out.jsonl"
    first = batchchat.run(job, out, **run_options(sim, max_cost=0.005))
    assert first.exit_code == ExitCode.SPENDING_CAP
    done = len(read_output(out))
    assert 0 < done < 120
    second = batchchat.run(job, out, **run_options(sim, max_cost=1))
    assert second.exit_code == 0
    assert second.skipped_already_done == done
    ids = [line["custom_id"] for line in read_output(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(120))
    assert second.cost is not None and not second.cost["cap"]["reached"]


def test_a_capped_summary_says_what_was_spent_and_what_is_left(tmp_path: Path, sim: Simulator) -> None:
    job = write_jobs(tmp_path / "job.jsonl", mixed_lines(60))
    summary = batchchat.run(job, tmp_path / "out.jsonl", **run_options(sim, max_cost="$0.003"))
    text = summary.render()
    assert summary.exit_code == 5
    assert "cap        $0.00300, reached:" in text
    assert f"{summary.not_finished:,} requests left" in text
    assert "rerun with a higher --max-cost" in text
    data = summary.to_dict()["cost"]
    assert data["cap"]["cap_usd"] == 0.003 and data["cap"]["requests_left"] == summary.not_finished


# ---- the guard alone: a scripted sender, no network ---------------------------------------------------------

def _job(max_tokens: int = 100, model: str = "gpt-4o-mini") -> Job:
    job = parse_line(f'{{"custom_id": "a", "model": "{model}", "max_tokens": {max_tokens}, '
                     '"messages": [{"role": "user", "content": "hello there"}]}'.encode(), 1, JobDefaults())
    assert isinstance(job, Job)
    return job


class ScriptedSender:
    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = outcomes
        self.sent = 0

    async def send(self, path: str, content: bytes) -> Outcome:
        self.sent += 1
        return self.outcomes.pop(0)


def _success(prompt: int, completion: int) -> Success:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return Success(200, {"usage": usage}, b"{}", None, {})


def test_each_attempt_is_settled_or_released_by_what_it_may_have_cost() -> None:
    fails: list[tuple[ExitCode, str]] = []
    spending = Spending(TABLE, LocalLedger(1.0), lambda code, message: fails.append((code, message)))
    job = _job()
    worst = spending.worst_case(job, 5)
    assert worst is not None
    sender = ScriptedSender([Retryable("http_500", "boom", 500), Retryable("timeout", "timed out"),
                             Failed("http_400", "bad", 400), _success(7, 20)])

    async def main() -> None:
        assert await spending.reserve(job, 5)
        assert spending.ledger is not None and spending.ledger.reserved == pytest.approx(worst, abs=1e-9)
        await spending.send(job, sender, b"")  # 500: released
        assert spending.ledger.reserved == 0 and spending.spent == 0
        await spending.send(job, sender, b"")  # a retry reserves again; a timeout is spent in full
        retry_worst = spending.worst_case(job, prompt_estimate(job))
        assert retry_worst is not None and retry_worst >= worst
        assert spending.spent == pytest.approx(retry_worst, abs=1e-9)
        await spending.send(job, sender, b"")  # 400: released
        await spending.send(job, sender, b"")  # an answer: its real cost
        price = TABLE.price_for("gpt-4o-mini")
        assert price is not None
        real = tokens_cost(price, usage_tokens({"prompt_tokens": 7, "completion_tokens": 20})).total
        assert spending.spent == pytest.approx(retry_worst + real, abs=1e-9)
        assert spending.ledger.reserved == 0

    anyio.run(main)
    assert spending.unknown_fate == 1 and not fails


def test_dispatch_waits_for_requests_in_flight_then_the_cap_is_reached() -> None:
    fails: list[ExitCode] = []
    spending = Spending(TABLE, LocalLedger(0.0001), lambda code, message: fails.append(code))
    a, b = _job(100), _job(100)
    worst = spending.worst_case(a, 5)
    assert worst is not None and 0.0001 / 2 < worst < 0.0001  # one fits, two do not

    async def main() -> None:
        assert await spending.reserve(a, 5)
        waited = anyio.Event()

        async def second() -> None:
            assert await spending.reserve(b, 5)  # fits once a's answer settles below its reservation
            waited.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await anyio.sleep(0.01)
            assert not waited.is_set()
            await spending.send(a, ScriptedSender([_success(3, 2)]), b"")
        assert waited.is_set()
        await spending.send(b, ScriptedSender([Retryable("connection", "reset")]), b"")  # spent in full
        assert not await spending.reserve(_job(100), 5)  # nothing in flight, no room: the cap is reached

    anyio.run(main)
    assert fails == [ExitCode.SPENDING_CAP]
    assert spending.spent <= 0.0001


def test_the_worst_case_is_worst_case_cost_of_the_padded_prompt() -> None:
    from batchchat.money.cost import worst_case_cost
    from batchchat.money.guard import PROMPT_PAD, PROMPT_SLACK

    spending = Spending(TABLE, LocalLedger(1.0))
    job = _job(100, "gpt-4.1")
    price = TABLE.price_for("gpt-4.1")
    assert price is not None
    expected = worst_case_cost(price, math.ceil(40 * PROMPT_PAD) + PROMPT_SLACK, 100)
    assert spending.worst_case(job, 40) == pytest.approx(expected, rel=1e-12)
    assert Spending(TABLE).worst_case(_job(100, "house-llama"), 40) is None


def test_a_prompt_estimate_found_low_pads_later_reservations_more() -> None:
    spending = Spending(TABLE, LocalLedger(1.0))
    job = _job(1)
    before = spending.worst_case(job, 5)

    async def main() -> None:
        assert await spending.reserve(job, 5)
        await spending.send(job, ScriptedSender([_success(500, 1)]), b"")  # the prompt was 100x the estimate

    anyio.run(main)
    after = spending.worst_case(job, 5)
    assert before is not None and after is not None and after > 2 * before
    assert spending.ledger is not None and spending.ledger.to_dict()["overruns"] == 1
