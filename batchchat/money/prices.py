"""Prices as data: the table shipped with batchchat (`prices.toml`), plus a user file that adds or overrides models.

A price is USD per 1M tokens: input, cached input, output, and the same three for the Batch API (the table's
`batch_discount` applied, unless a model gives its batch prices itself). A model without a price is "cost
unknown": `PriceTable.price_for` returns None, and callers must never count it as free.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from batchchat.errors import UsageError

PER_TOKENS = 1_000_000  # prices are per this many tokens
SHIPPED = "prices.toml"
# The fields of a model entry; `input` and `output` are required.
MODEL_KEYS = ("input", "cached_input", "output", "batch_input", "batch_cached_input", "batch_output")
TOP_KEYS = ("as_of", "source", "batch_discount", "models")
# A dated snapshot: gpt-4o-mini-2024-07-18, gpt-3.5-turbo-0125, gpt-4-0613.
_SNAPSHOT = re.compile(r"^(?P<base>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{4})$")


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per 1M tokens of one tier (online or Batch API)."""

    input: float
    cached_input: float
    output: float


@dataclass(frozen=True, slots=True)
class Price:
    """A model's prices, USD per 1M tokens. `cached_input` is None when the table gives none: cached tokens are then
    charged the full input price (an overstatement, never an understatement)."""

    input: float
    cached_input: float | None
    output: float
    batch: Rates  # the Batch API's prices

    @property
    def online(self) -> Rates:
        """The online (real-time) prices, with cached input filled in."""
        return Rates(self.input, self.input if self.cached_input is None else self.cached_input, self.output)

    def rates(self, batch: bool = False) -> Rates:
        """The prices of one tier."""
        return self.batch if batch else self.online


class PriceTable:
    """Prices by model name, with the table's date and where it came from."""

    def __init__(self, entries: dict[str, dict[str, float]], batch_discount: float, as_of: str | None = None,
                 sources: tuple[str, ...] = ()) -> None:
        self.batch_discount = batch_discount
        self.as_of = as_of
        self.sources = sources
        self._prices = {model: _price(entry, batch_discount) for model, entry in entries.items()}

    @classmethod
    def load(cls, user_file: Path | None = None) -> PriceTable:
        """The shipped table, then `user_file` (TOML or JSON, by its extension) adding or replacing models.

        A model in the user file replaces the shipped entry whole; a `batch_discount` there replaces the table's.
        Raises `UsageError` naming the file and the field for anything that is not a valid price file.
        """
        shipped = resources.files("batchchat.money").joinpath(SHIPPED)
        base = _validate(_parse_toml(shipped.read_text(encoding="utf-8"), SHIPPED), SHIPPED)
        entries = dict(base["models"])
        discount = base.get("batch_discount", 0.5)
        as_of = base.get("as_of")
        sources = [SHIPPED]
        if user_file is not None:
            user = _validate(read_price_file(user_file), str(user_file))
            entries.update(user["models"])
            discount = user.get("batch_discount", discount)
            as_of = user.get("as_of", as_of)
            sources.append(str(user_file))
        return cls(entries, discount, as_of, tuple(sources))

    @classmethod
    def from_data(cls, data: dict[str, Any], origin: str = "<prices>") -> PriceTable:
        """A table from an already parsed mapping, validated as a file would be (for tests and library callers)."""
        valid = _validate(data, origin)
        return cls(valid["models"], valid.get("batch_discount", 0.5), valid.get("as_of"), (origin,))

    @property
    def models(self) -> tuple[str, ...]:
        """The models with a price, sorted."""
        return tuple(sorted(self._prices))

    def price_for(self, model: str) -> Price | None:
        """The price of `model`, a dated snapshot falling back to its base model; None when unknown."""
        price = self._prices.get(model)
        if price is None and (snapshot := _SNAPSHOT.match(model)):
            price = self._prices.get(snapshot.group("base"))
        return price


def read_price_file(path: Path) -> dict[str, Any]:
    """Parse a user price file, TOML or JSON by its extension, into a mapping (not yet validated)."""
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise UsageError(f"{path}: a prices file must end in .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"{path}: cannot read the prices file: {reason}") from None
    if suffix == ".toml":
        return _parse_toml(text, str(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object with a \"models\" object")
    return data


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{origin}: not valid TOML ({exc})") from None


def _validate(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """Check a parsed price file; returns {"models": {name: {key: float}}, and the top-level fields given}."""
    for key in data:
        if key not in TOP_KEYS:
            _fail(origin, key, f"unknown key (expected {', '.join(TOP_KEYS)})")
    out: dict[str, Any] = {}
    if "as_of" in data:
        if not isinstance(data["as_of"], str):
            _fail(origin, "as_of", "must be a date as a string, such as \"2026-12-02\"")
        out["as_of"] = data["as_of"]
    if "source" in data:
        out["source"] = str(data["source"])
    if "batch_discount" in data:
        discount = _number(origin, "batch_discount", data["batch_discount"])
        if discount > 1:
            _fail(origin, "batch_discount", f"must be a fraction of the online price, 0 to 1, got {discount}")
        out["batch_discount"] = discount
    models = data.get("models", {})
    if not isinstance(models, dict):
        _fail(origin, "models", "must be a table of models")
    out["models"] = {name: _model_entry(origin, name, entry) for name, entry in models.items()}
    return out


def _model_entry(origin: str, name: str, entry: Any) -> dict[str, float]:
    where = f"models.{json.dumps(name)}"
    if not isinstance(entry, dict):
        _fail(origin, where, f"must be a table of prices ({', '.join(MODEL_KEYS)}), got {_kind(entry)}")
    for key, value in entry.items():
        if key not in MODEL_KEYS:
            hint = " (a model name with a dot must be quoted: [models.\"gpt-4.1\"])" if isinstance(value, dict) else ""
            _fail(origin, f"{where}.{key}", f"unknown key (expected {', '.join(MODEL_KEYS)}){hint}")
    for key in ("input", "output"):
        if key not in entry:
            _fail(origin, f"{where}.{key}", "missing (USD per 1M tokens)")
    return {key: _number(origin, f"{where}.{key}", value) for key, value in entry.items()}


def _number(origin: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(origin, field, f"must be a number (USD per 1M tokens), got {_kind(value)} {value!r}")
    if not math.isfinite(value) or value < 0:
        _fail(origin, field, f"must be a finite number, zero or more, got {value!r}")
    return float(value)


def _price(entry: dict[str, float], discount: float) -> Price:
    cached = entry.get("cached_input")
    online_cached = entry["input"] if cached is None else cached
    batch = Rates(
        entry.get("batch_input", entry["input"] * discount),
        entry.get("batch_cached_input", online_cached * discount),
        entry.get("batch_output", entry["output"] * discount),
    )
    return Price(entry["input"], cached, entry["output"], batch)


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _fail(origin: str, field: str, reason: str) -> NoReturn:
    raise UsageError(f"{origin}: {field}: {reason}")
