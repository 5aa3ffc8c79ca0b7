"""Money: prices per model, the cost of usage, an estimate before a run, and a spending cap.

- `prices`: `PriceTable.load(user_file)` and `price_for(model) -> Price | None` (None: cost unknown, never free).
- `cost`: `usage_cost`, `worst_case_cost` and `CostTally` (cost by model for the progress line and the summary).
- `cap`: `SpendLedger` (reserve a request's worst case before sending, settle it with its real cost) and
  `parse_max_cost`.
- `estimate`: `estimate_jobs` and `learn_completion_ratio` (what a job will cost, before it runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchchat._lazy import lazy_exports

if TYPE_CHECKING:
    from batchchat.money.cap import SpendLedger, parse_max_cost
    from batchchat.money.cost import CostTally, usage_cost, usage_tokens, worst_case_cost
    from batchchat.money.estimate import Estimate, ModelEstimate, estimate_jobs, learn_completion_ratio
    from batchchat.money.prices import Price, PriceTable, Rates

_PUBLIC = {
    "SpendLedger": "batchchat.money.cap",
    "parse_max_cost": "batchchat.money.cap",
    "CostTally": "batchchat.money.cost",
    "usage_cost": "batchchat.money.cost",
    "usage_tokens": "batchchat.money.cost",
    "worst_case_cost": "batchchat.money.cost",
    "Estimate": "batchchat.money.estimate",
    "ModelEstimate": "batchchat.money.estimate",
    "estimate_jobs": "batchchat.money.estimate",
    "learn_completion_ratio": "batchchat.money.estimate",
    "Price": "batchchat.money.prices",
    "PriceTable": "batchchat.money.prices",
    "Rates": "batchchat.money.prices",
}
__all__ = [
    "CostTally",
    "Estimate",
    "ModelEstimate",
    "Price",
    "PriceTable",
    "Rates",
    "SpendLedger",
    "estimate_jobs",
    "learn_completion_ratio",
    "parse_max_cost",
    "usage_cost",
    "usage_tokens",
    "worst_case_cost",
]

__getattr__ = lazy_exports(__name__, _PUBLIC)
