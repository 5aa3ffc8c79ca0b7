"""The price table: the shipped file, snapshots, unknown models, user files (TOML and JSON), and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchchat.errors import ExitCode, UsageError
from batchchat.money.prices import PriceTable


def test_shipped_table_loads_with_its_date_and_the_batch_discount() -> None:
    table = PriceTable.load()
    assert table.as_of and table.as_of[:2] == "20"
    assert table.batch_discount == 0.5
    for model in ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-5-mini", "text-embedding-3-small"):
        assert table.price_for(model) is not None, model


def test_known_prices_and_the_batch_price_is_half() -> None:
    price = PriceTable.load().price_for("gpt-4o-mini")
    assert price is not None
    assert (price.input, price.cached_input, price.output) == (0.15, 0.075, 0.60)
    assert price.batch.input == pytest.approx(0.075)
    assert price.batch.cached_input == pytest.approx(0.0375)
    assert price.batch.output == pytest.approx(0.30)
    embed = PriceTable.load().price_for("text-embedding-3-small")
    assert embed is not None and (embed.input, embed.output) == (0.02, 0.0)


def test_a_model_without_a_cached_price_charges_cached_tokens_the_input_price() -> None:
    price = PriceTable.load().price_for("gpt-3.5-turbo")
    assert price is not None and price.cached_input is None
    assert price.online.cached_input == price.input
    assert price.batch.cached_input == pytest.approx(price.input / 2)


def test_dated_snapshots_resolve_to_their_base_model() -> None:
    table = PriceTable.load()
    assert table.price_for("gpt-4o-mini-2024-07-18") == table.price_for("gpt-4o-mini")
    assert table.price_for("gpt-3.5-turbo-0125") == table.price_for("gpt-3.5-turbo")
    assert table.price_for("gpt-4.1-2025-04-14") == table.price_for("gpt-4.1")


def test_a_listed_snapshot_keeps_its_own_price(tmp_path: Path) -> None:
    user = tmp_path / "p.toml"
    user.write_text('[models."gpt-4o-2024-05-13"]\ninput = 5.0\noutput = 15.0\n')
    table = PriceTable.load(user)
    assert table.price_for("gpt-4o-2024-05-13").input == 5.0
    assert table.price_for("gpt-4o-2024-08-06").input == 2.5  # another snapshot: the base price


@pytest.mark.parametrize("model", ["my-model", "ft:gpt-4o-mini:acme::abc123", "gpt-4o-mini-fast", ""])
def test_unknown_models_have_no_price(model: str) -> None:
    assert PriceTable.load().price_for(model) is None


def test_user_toml_overrides_and_adds(tmp_path: Path) -> None:
    user = tmp_path / "prices.toml"
    user.write_text(
        'as_of = "2027-01-01"\n'
        '[models."gpt-4o-mini"]\ninput = 1.0\noutput = 2.0\n'  # replaces the shipped entry whole
        '[models."my-model"]\ninput = 0.5\ncached_input = 0.1\noutput = 1.5\nbatch_output = 1.0\n'
    )
    table = PriceTable.load(user)
    mini = table.price_for("gpt-4o-mini")
    assert (mini.input, mini.cached_input, mini.output) == (1.0, None, 2.0)
    mine = table.price_for("my-model")
    assert (mine.input, mine.cached_input, mine.output) == (0.5, 0.1, 1.5)
    assert mine.batch.output == 1.0  # given explicitly
    assert mine.batch.input == pytest.approx(0.25)  # the discount for the rest
    assert table.price_for("gpt-4o").input == 2.5  # untouched shipped models stay
    assert table.as_of == "2027-01-01"
    assert table.sources == ("prices.toml", str(user))


def test_user_json_overrides_and_adds_and_sets_the_discount(tmp_path: Path) -> None:
    user = tmp_path / "prices.json"
    user.write_text(json.dumps({"batch_discount": 0.4, "models": {
        "gpt-4o": {"input": 3, "output": 12}, "local-llama": {"input": 0, "output": 0}}}))
    table = PriceTable.load(user)
    assert table.price_for("gpt-4o").input == 3.0
    assert table.price_for("gpt-4o").batch.output == pytest.approx(12 * 0.4)
    assert table.price_for("gpt-4o-mini").batch.output == pytest.approx(0.6 * 0.4)
    assert table.price_for("local-llama").output == 0.0  # explicitly free is a price, unlike unknown


BAD_TOML = [
    ('[models."gpt-4o"\ninput = 1', "not valid TOML"),
    ('[models."m"]\ninput = -1.0\noutput = 1.0\n', 'models."m".input: must be a finite number, zero or more'),
    ('[models."m"]\ninput = "cheap"\noutput = 1.0\n', 'models."m".input: must be a number'),
    ('[models."m"]\ninput = true\noutput = 1.0\n', 'models."m".input: must be a number'),
    ('[models."m"]\ninput = nan\noutput = 1.0\n', 'models."m".input: must be a finite number'),
    ('[models."m"]\ninput = 1.0\nouput = 2.0\n', 'models."m".ouput: unknown key'),
    ('[models."m"]\ninput = 1.0\n', 'models."m".output: missing'),
    ('models = { m = 3 }\n', 'models."m": must be a table of prices'),
    ('models = 3\n', "models: must be a table of models"),
    ('currency = "EUR"\n', "currency: unknown key"),
    ("batch_discount = 2\n", "batch_discount: must be a fraction"),
    ("batch_discount = -0.5\n", "batch_discount: must be a finite number, zero or more"),
    ('as_of = 2026\n', "as_of: must be a date as a string"),
    ('[models.gpt-4.1]\ninput = 1.0\noutput = 2.0\n', 'models."gpt-4".1: unknown key'),
]


@pytest.mark.parametrize(("text", "message"), BAD_TOML)
def test_bad_toml_names_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "my-prices.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        PriceTable.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE


def test_an_unquoted_dotted_model_name_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[models.gpt-4.1]\ninput = 1.0\noutput = 2.0\n')
    with pytest.raises(UsageError, match=r'must be quoted: \[models\."gpt-4\.1"\]'):
        PriceTable.load(path)


BAD_JSON = [
    ('{"models": {"m": {"input": 1, "output": 2}', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"models": {"m": {"input": -0.01, "output": 2}}}', 'models."m".input: must be a finite number, zero or more'),
    ('{"models": {"m": {"input": "1", "output": 2}}}', 'models."m".input: must be a number'),
    ('{"models": {"m": {"input": null, "output": 2}}}', 'models."m".input: must be a number'),
    ('{"models": {"m": [1, 2]}}', 'models."m": must be a table of prices'),
    ('{"models": {"m": {"input": 1, "ouput": 2}}}', 'models."m".ouput: unknown key'),
]


@pytest.mark.parametrize(("text", "message"), BAD_JSON)
def test_bad_json_names_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "my-prices.json"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        PriceTable.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_a_file_that_is_neither_toml_nor_json_or_is_missing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"p\.yaml: a prices file must end in \.toml or \.json"):
        PriceTable.load(tmp_path / "p.yaml")
    with pytest.raises(UsageError, match=r"absent\.toml: cannot read the prices file"):
        PriceTable.load(tmp_path / "absent.toml")


def test_from_data_validates_like_a_file() -> None:
    table = PriceTable.from_data({"models": {"m": {"input": 1, "output": 4}}}, "inline")
    assert table.price_for("m").batch.output == 2.0
    with pytest.raises(UsageError, match=r'^inline: models\."m"\.output: missing'):
        PriceTable.from_data({"models": {"m": {"input": 1}}}, "inline")
