"""Cost arithmetic on known prices, every usage shape, the run tally, and the spending-cap ledger."""

from __future__ import annotations

import random

import pytest

from batchchat.errors import UsageError
from batchchat.money.cap import SpendLedger, parse_max_cost
from batchchat.money.cost import CostTally, usage_cost, usage_tokens, usd, worst_case_cost
from batchchat.money.prices import PriceTable

TABLE = PriceTable.load()
MINI = TABLE.price_for("gpt-4o-mini")  # 0.15 input, 0.075 cached, 0.60 output per 1M
EMBED = TABLE.price_for("text-embedding-3-small")  # 0.02 per 1M
CHAT_USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
              "prompt_tokens_details": {"cached_tokens": 200}}
RESPONSES_USAGE = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 200}, "output_tokens": 500,
                   "output_tokens_details": {"reasoning_tokens": 120}, "total_tokens": 1500}


def test_chat_usage_with_cached_tokens() -> None:
    # 800 uncached × 0.15 + 200 cached × 0.075 + 500 × 0.60, per million
    assert usage_cost(MINI, CHAT_USAGE) == pytest.approx(0.000120 + 0.000015 + 0.000300, rel=1e-12)


def test_responses_usage_shape_costs_the_same() -> None:
    assert usage_tokens(RESPONSES_USAGE) == usage_tokens(CHAT_USAGE)
    assert usage_cost(MINI, RESPONSES_USAGE) == pytest.approx(0.000435, rel=1e-12)


def test_embeddings_usage_has_prompt_tokens_only() -> None:
    assert usage_cost(EMBED, {"prompt_tokens": 1_000_000, "total_tokens": 1_000_000}) == pytest.approx(0.02)


def test_batch_api_price_is_half() -> None:
    assert usage_cost(MINI, CHAT_USAGE, batch=True) == pytest.approx(0.000435 / 2, rel=1e-12)


def test_odd_usage_never_costs_less_than_its_tokens() -> None:
    assert usage_cost(MINI, None) == 0.0
    assert usage_cost(MINI, {"prompt_tokens": "x", "completion_tokens": -5}) == 0.0
    # more cached tokens than prompt tokens: clamped to the prompt
    assert usage_tokens({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}).cached == 10
    no_cache_price = TABLE.price_for("gpt-3.5-turbo")  # no cached price: cached tokens at the input price
    assert usage_cost(no_cache_price, CHAT_USAGE) == pytest.approx((1000 * 0.50 + 500 * 1.50) / 1e6)


def test_worst_case_is_prompt_plus_the_whole_cap() -> None:
    assert worst_case_cost(MINI, 100, 60 * 2) == pytest.approx((100 * 0.15 + 120 * 0.60) / 1e6, rel=1e-12)
    assert worst_case_cost(MINI, 100, 120, batch=True) == pytest.approx((100 * 0.15 + 120 * 0.60) / 2e6, rel=1e-12)
    assert worst_case_cost(EMBED, 1000, 0) == pytest.approx(0.00002)
    # the worst case bounds any answer that keeps within the cap and the prompt estimate
    assert usage_cost(MINI, CHAT_USAGE) <= worst_case_cost(MINI, 1000, 500)


def test_tally_by_model_split_and_unknown_models_never_free() -> None:
    tally = CostTally(TABLE)
    assert tally.add("gpt-4o-mini", CHAT_USAGE) == pytest.approx(0.000435)
    assert tally.add("gpt-4o-mini-2024-07-18", CHAT_USAGE) == pytest.approx(0.000435)  # snapshot: base price
    assert tally.add("text-embedding-3-small", {"prompt_tokens": 500_000}) == pytest.approx(0.01)
    for _ in range(120):
        assert tally.add("my-model", CHAT_USAGE) is None
    assert tally.total == pytest.approx(2 * 0.000435 + 0.01)
    assert tally.unknown == {"my-model": 120}
    data = tally.to_dict()
    assert data["total_usd"] == pytest.approx(tally.total)
    assert data["by_model"]["gpt-4o-mini"] == {
        "requests": 1, "prompt_tokens": 1000, "cached_tokens": 200, "completion_tokens": 500,
        "prompt_usd": pytest.approx(0.00012), "cached_usd": pytest.approx(0.000015),
        "completion_usd": pytest.approx(0.0003), "total_usd": pytest.approx(0.000435)}
    assert "my-model" not in data["by_model"]
    assert data["unknown_price"]["my-model"]["requests"] == 120
    line = tally.render()
    assert line.startswith("cost  $0.0109 (prompt $0.0102, cached $0.0000300, completion $0.000600)")
    assert line.endswith("; unknown price for: my-model (120 requests)")


def test_tally_render_without_cache_or_unknown_and_at_batch_prices() -> None:
    tally = CostTally(TABLE, batch=True)
    tally.add("gpt-4o", {"prompt_tokens": 400_000, "completion_tokens": 100_000})
    assert tally.render() == "cost  $1.00 at Batch API prices (prompt $0.500, completion $0.500)"


@pytest.mark.parametrize(("amount", "text"), [
    (0, "$0.00"), (1234.5, "$1,234.50"), (12.345, "$12.35"), (1.2, "$1.20"), (0.5, "$0.500"),
    (0.0123, "$0.0123"), (0.000436, "$0.000436")])
def test_usd(amount: float, text: str) -> None:
    assert usd(amount) == text


def test_ledger_reserve_settle_release() -> None:
    ledger = SpendLedger(1.00)
    assert ledger.try_reserve(0.40) and ledger.try_reserve(0.40)
    assert not ledger.try_reserve(0.30)  # 0.80 + 0.30 > 1.00
    assert ledger.reserved == pytest.approx(0.80) and ledger.remaining == pytest.approx(0.20)
    ledger.settle(0.40, 0.10)  # billed less than its worst case
    ledger.release(0.40)  # refused before it ran: not billed
    assert ledger.spent == pytest.approx(0.10) and ledger.reserved == 0
    assert ledger.try_reserve(0.90) and not ledger.try_reserve(0.000001)
    ledger.settle(0.90, 0.90)
    assert ledger.spent == pytest.approx(1.00) and ledger.remaining == 0
    assert ledger.overruns == 0


def test_ledger_records_a_provider_overrun_and_then_refuses() -> None:
    ledger = SpendLedger(1.00)
    assert ledger.try_reserve(0.50)
    ledger.settle(0.50, 0.75)  # billed above the worst case: a provider's miscount
    assert ledger.spent == pytest.approx(0.75) and ledger.overruns == 1
    assert ledger.overrun_usd == pytest.approx(0.25)
    assert ledger.try_reserve(0.25) and not ledger.try_reserve(0.01)
    assert ledger.to_dict()["overruns"] == 1


def test_ledger_rejects_negative_amounts() -> None:
    with pytest.raises(ValueError):
        SpendLedger(1.0).try_reserve(-0.1)
    with pytest.raises(ValueError):
        SpendLedger(float("nan"))


@pytest.mark.parametrize("seed", range(20))
def test_ledger_never_passes_the_cap_under_random_sequences(seed: int) -> None:
    """Random reserve / settle (at or below the reservation) / release, as retries and faults make them: reserved +
    spent stay within the cap at every step, and a job that costs more than the cap ends with nearly all of it
    spent (within one request's worst case)."""
    rng = random.Random(seed)
    cap = rng.choice([0.01, 1.0, 7.3, 250.0])
    largest = cap * rng.choice([0.001, 0.02, 0.2])
    ledger = SpendLedger(cap)
    in_flight: list[float] = []
    refused_when_idle = False
    for _ in range(3000):
        op = rng.random()
        if op < 0.5 or not in_flight:
            amount = rng.uniform(0, largest)
            if ledger.try_reserve(amount):
                in_flight.append(amount)
            elif not in_flight:
                refused_when_idle = True
                break
        else:
            held = in_flight.pop(rng.randrange(len(in_flight)))
            outcome = rng.random()
            if outcome < 0.15:
                ledger.release(held)  # a 429 or a refused connection: not billed
            elif outcome < 0.25:
                ledger.settle(held, held)  # a timeout after sending: settled at its worst case
            else:
                ledger.settle(held, held * rng.uniform(0.0, 1.0))  # an answer, billed its real usage
        assert ledger.spent + ledger.reserved <= cap * (1 + 1e-12)
        assert ledger.reserved == pytest.approx(sum(in_flight), abs=1e-9 * (len(in_flight) + 1))
    for held in in_flight:
        ledger.settle(held, held)
    assert ledger.spent <= cap * (1 + 1e-12)
    if refused_when_idle:  # stopped only because the next request did not fit
        assert ledger.spent >= cap - largest
    assert ledger.overruns == 0


@pytest.mark.parametrize(("value", "expected"),
                         [("5", 5.0), ("0.25", 0.25), ("$12.50", 12.5), (3, 3.0), ("1e2", 100.0)])
def test_parse_max_cost(value: object, expected: float) -> None:
    assert parse_max_cost(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("0", "must be more than zero"), ("-1", "must be more than zero"), (0.0, "must be more than zero"),
    ("abc", "must be an amount in USD"), ("", "must be an amount in USD"), ("nan", "must be an amount in USD"),
    ("inf", "must be an amount in USD"), (True, "must be an amount in USD"), ("5 USD", "must be an amount in USD")])
def test_parse_max_cost_refuses(value: object, message: str) -> None:
    with pytest.raises(UsageError, match=f"^--max-cost: {message}"):
        parse_max_cost(value)
