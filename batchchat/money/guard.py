"""`Spending`: the money of one online run. It prices every answer (the progress line, the summary, each output
line's `cost_usd`) and, with `--max-cost`, keeps the run under its cap.

The cap: before a request is dispatched, its worst case (a padded prompt estimate, none of it cached, plus its
completion cap, at the model's prices) is reserved in a ledger together with everything in flight and everything
spent (`reserve`, called by the dispatcher once the request is admitted, right before it is handed to a worker).
When it does not fit, the dispatcher waits while requests in flight hold money (their answers settle below their
reservations and free room); when nothing is in flight and it still does not fit, the cap is reached: the run
stops with exit 5, in-flight requests finish, and a rerun with a higher cap resumes.

Every attempt is accounted (`send` wraps the sender): an answer with usage is settled at its real cost; an answer
that may have been billed without saying so (a timeout or a dropped connection after sending, a 200 with a broken
body, a 200 without usage) is settled at its full reservation; an attempt certainly not billed (an HTTP error
answer: 429, 5xx, 4xx) is released. A retry reserves again before it is sent, so a retried request's every paid
attempt is spent.

The ledger is a `money.ledger.Ledger`: this process's (`LocalLedger`), or with `--shared` the fleet's
(`SharedLedger`, in Redis), which the whole fleet never passes. Waiting for room differs only in who can free it:
with a shared cap, other processes' requests in flight can, so a process with none of its own in flight polls the
fleet's figures every `FLEET_POLL` seconds while the fleet holds reservations, and takes the cap as reached when
nothing is held, or when what is held has not moved for `FLEET_PATIENCE` seconds (the reservations of a process
that crashed: counted as spent, since they may have been billed). `clock` and `sleep` are the seams for tests.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from batchchat.config.settings import RunSettings
from batchchat.errors import BatchchatError, ExitCode, UsageError
from batchchat.http.outcomes import Failed, Fatal, Outcome, Retryable, Success
from batchchat.input.parse import Job
from batchchat.input.plan import Plan, iter_pending
from batchchat.money.cost import CostTally, usage_tokens, usd
from batchchat.money.ledger import Ledger, LocalLedger
from batchchat.money.prices import PER_TOKENS, PriceTable
from batchchat.pacing.tokens import completion_cap, prompt_estimate

# A prompt estimate is padded before it is reserved: an under-reservation is the only way a cap can be passed.
PROMPT_PAD = 1.25
PROMPT_SLACK = 16  # tokens
CAP_REASON = "spending_cap"
FLEET_POLL = 0.25  # seconds between looks at a shared cap while only other processes hold its reservations
FLEET_PATIENCE = 60.0  # seconds the fleet's reservations may stand still before the cap is taken as reached
RESIDUE = 1e-9  # USD: a shared cap's reservations below this are the float residue of settled ones, not requests


class Spending:
    """Prices a run's answers and, given a ledger, keeps it under its cap.

    `fail(code, message)` stops the run (`StopControl.fail`): called once, when the cap is reached.
    """

    def __init__(self, table: PriceTable, ledger: Ledger | None = None,
                 fail: Callable[[ExitCode, str], None] | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = anyio.sleep) -> None:
        self.table = table
        self.ledger = ledger
        self._clock = clock
        self._sleep = sleep
        # the hot path sums tokens per model ([answers, prompt, cached, completion]) and prices from cached rates
        self._sums: dict[str, list[int]] = {}
        self._rates: dict[str, tuple[float, float, float] | None] = {}
        self._fail = fail or (lambda code, message: None)
        self._holds: dict[int, tuple[float, int]] = {}  # id(job) -> (reservation, prompt estimate) of its first
        # attempt
        self._room: anyio.Event | None = None  # set when money is settled or released (waiters re-check)
        self.pad = PROMPT_PAD
        self.capped = False  # the cap stopped the run
        self.unknown_fate = 0  # attempts settled at their full reservation (may have been billed)
        self.unknown_fate_usd = 0.0

    @classmethod
    def for_run(cls, prices: Any, max_cost: float | None,
                fail: Callable[[ExitCode, str], None] | None = None, ledger: Ledger | None = None) -> Spending:
        """The shipped price table plus the user's file (`UsageError` naming it when bad), and a ledger when
        there is a cap (`ledger`, else this process's own)."""
        table = PriceTable.load(prices)
        if ledger is None and max_cost is not None:
            ledger = LocalLedger(max_cost)
        return cls(table, ledger, fail)

    # ---- the figures -------------------------------------------------------------------------------------

    @property
    def tally(self) -> CostTally:
        """The answers' cost by model so far."""
        tally = CostTally(self.table)
        for model, (answers, prompt, cached, completion) in self._sums.items():
            tally.add_tokens(model, answers, prompt, cached, completion)
        return tally

    @property
    def spent(self) -> float:
        """USD spent so far: the ledger's (which counts attempts of unknown fate in full) or the answers' cost."""
        if self.ledger is not None:
            return self.ledger.spent
        total = 0.0
        for model, (_, prompt, cached, completion) in self._sums.items():
            rates = self._rates.get(model)
            if rates is not None:
                total += ((prompt - cached) * rates[0] + cached * rates[1] + completion * rates[2]) / PER_TOKENS
        return total

    def line_cost(self, job: Job, usage: Any) -> float | None:
        """The cost of one answer's usage (None: no usage, or the model's price is unknown)."""
        rates = self._rates_for(str(job.body.get("model")))
        if rates is None or not isinstance(usage, dict):
            return None
        prompt, cached, completion = _tokens(usage)
        return round(((prompt - cached) * rates[0] + cached * rates[1] + completion * rates[2]) / PER_TOKENS, 12)

    def _rates_for(self, model: str) -> tuple[float, float, float] | None:
        try:
            return self._rates[model]
        except KeyError:
            price = self.table.price_for(model)
            online = price.online if price is not None else None
            rates = self._rates[model] = None if online is None else (online.input, online.cached_input,
                                                                      online.output)
            return rates

    def _count(self, model: str, usage: dict[str, Any]) -> float | None:
        """Add one answer's usage to its model's sums; its cost (None: price unknown)."""
        prompt, cached, completion = _tokens(usage)
        sums = self._sums.get(model)
        if sums is None:
            sums = self._sums[model] = [0, 0, 0, 0]
        sums[0] += 1
        sums[1] += prompt
        sums[2] += cached
        sums[3] += completion
        rates = self._rates_for(model)
        if rates is None:
            return None
        return ((prompt - cached) * rates[0] + cached * rates[1] + completion * rates[2]) / PER_TOKENS

    def worst_case(self, job: Job, prompt: int) -> float | None:
        """What a request reserves: its padded prompt estimate and whole completion cap; None: no price."""
        rates = self._rates_for(str(job.body.get("model")))
        if rates is None:
            return None
        padded = math.ceil(prompt * self.pad) + PROMPT_SLACK  # none of it cached: the input rate
        return (padded * rates[0] + completion_cap(job) * rates[2]) / PER_TOKENS  # = worst_case_cost

    # ---- the dispatcher's hook ---------------------------------------------------------------------------

    async def reserve(self, job: Job, prompt: int) -> bool:
        """Reserve the first attempt of an admitted request; False: the run stops (the cap is reached)."""
        if self.ledger is None:
            return True
        amount = await self._reserve(job, prompt)
        if amount is None:
            return False
        self._holds[id(job)] = (amount, prompt)
        return True

    # ---- the attempts' hook ------------------------------------------------------------------------------

    async def send(self, job: Job, sender: Any, content: bytes) -> Outcome:
        """Send one attempt through `sender` with its money reserved, then settle or release it."""
        if self.ledger is None:
            outcome = await sender.send(job.url, content)
            if isinstance(outcome, Success):
                usage = outcome.body.get("usage")
                if isinstance(usage, dict):
                    self._count(str(job.body.get("model")), usage)
            return outcome
        held = self._holds.pop(id(job), None)
        if held is None:  # a retry: reserve again
            prompt = prompt_estimate(job)
            amount = await self._reserve(job, prompt)
            if amount is None:
                return Retryable(CAP_REASON, "not retried: the spending cap is reached")
        else:
            amount, prompt = held
        try:
            outcome = await sender.send(job.url, content)
        except BaseException:
            await self._settle(amount, None)  # cancelled while sent: its fate is unknown
            raise
        await self._account(job, amount, prompt, outcome)
        return outcome

    async def aclose(self) -> None:
        """The run is over: give back reservations of requests that were never sent; a shared cap's figures are
        read once more for the summary (quietly, if the store is away)."""
        ledger = self.ledger
        if ledger is None:
            return
        holds, self._holds = list(self._holds.values()), {}
        for amount, _ in holds:
            await ledger.release(amount)
        if ledger.shared:
            with anyio.move_on_after(2.0), contextlib.suppress(BatchchatError):  # not --shared-timeout: it is over
                await ledger.usage()

    # ---- inside ------------------------------------------------------------------------------------------

    async def _reserve(self, job: Job, prompt: int) -> float | None:
        ledger = self.ledger
        assert ledger is not None
        amount = self.worst_case(job, prompt)
        if amount is None:
            model = job.body.get("model")
            self._fail(ExitCode.USAGE, f"no price for model {model!r}: a --max-cost run cannot keep its cap "
                                       "without one (add it with --prices FILE)")
            return None
        still: tuple[float, float, float] | None = None  # the fleet's (spent, reserved) and since when
        while not await ledger.try_reserve(amount):
            if self.capped:
                return None
            if ledger.reserved > 0:  # this process's requests in flight will settle and free room
                if self._room is None:
                    self._room = anyio.Event()
                if ledger.shared:  # ...and so may the fleet's: look again now and then
                    with anyio.move_on_after(FLEET_POLL):
                        await self._room.wait()
                else:
                    await self._room.wait()
                continue
            if ledger.shared:
                spent, reserved = await ledger.usage()
                now = self._clock()
                if still is None or (spent, reserved) != still[:2]:
                    still = (spent, reserved, now)
                if reserved > RESIDUE and now - still[2] < FLEET_PATIENCE:  # other processes' requests in flight
                    await self._sleep(FLEET_POLL)
                    continue
            await self._reached(amount)  # nothing in flight will free room: the cap is reached
            return None
        return amount

    async def _reached(self, amount: float) -> None:
        if self.capped:
            return
        self.capped = True
        ledger = self.ledger
        assert ledger is not None
        if ledger.shared:
            fleet, _ = await ledger.usage()
            spent = f"{usd(fleet)} spent by the fleet ({usd(ledger.spent)} by this process)"
        else:
            spent = f"{usd(ledger.spent)} spent"
        self._fail(ExitCode.SPENDING_CAP,
                   f"spending cap {usd(ledger.cap)} reached: {spent}, and the next request may cost up to "
                   f"{usd(amount)}; rerun with a higher --max-cost to resume")

    async def _account(self, job: Job, amount: float, estimate: int, outcome: Outcome) -> None:
        if isinstance(outcome, Success):
            usage = outcome.body.get("usage")
            if isinstance(usage, dict):
                cost = self._count(str(job.body.get("model")), usage)
                await self._settle(amount, amount if cost is None else cost)
                real = _tokens(usage)[0]
                if real > estimate * self.pad:  # the estimate ran low: pad more from now on
                    self.pad = min(8.0, 1.1 * real / max(1, estimate))
                return
            await self._settle(amount, None)  # billed, by how much it does not say
        elif isinstance(outcome, Retryable) and (outcome.status is None or 200 <= outcome.status < 300):
            await self._settle(amount, None)  # a timeout, a dropped connection, a broken 200: may have been billed
        else:
            assert isinstance(outcome, Retryable | Failed | Fatal)
            await self._release(amount)  # an HTTP error answer: not billed

    async def _settle(self, amount: float, actual: float | None) -> None:
        assert self.ledger is not None
        if actual is None:
            self.unknown_fate += 1
            self.unknown_fate_usd += amount
        with anyio.CancelScope(shield=True):  # a cancel must not leave the ledger half told (here, not the store)
            await self.ledger.settle(amount, amount if actual is None else actual)
        self._wake()

    async def _release(self, amount: float) -> None:
        assert self.ledger is not None
        with anyio.CancelScope(shield=True):
            await self.ledger.release(amount)
        self._wake()

    def _wake(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    # ---- the summary -------------------------------------------------------------------------------------

    def to_dict(self, left: int = 0) -> dict[str, Any]:
        """For the summary and `--summary-json`: cost by model (prompt, cached, completion), models of unknown
        price, and with a cap: the cap, what was spent (attempts of unknown fate in full), and what is left."""
        data = self.tally.to_dict()
        data["spent_usd"] = self.spent
        data["unknown_fate_attempts"] = self.unknown_fate
        data["unknown_fate_usd"] = self.unknown_fate_usd
        data["cap"] = None
        if self.ledger is not None:
            cap = self.ledger.to_dict()
            cap["reached"] = self.capped
            cap["requests_left"] = left
            data["cap"] = cap
        return data


def _tokens(usage: dict[str, Any]) -> tuple[int, int, int]:
    """(prompt, cached, completion) tokens of a usage object: the chat shape at once, others by `usage_tokens`."""
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0)
    if type(prompt) is int and type(completion) is int and prompt >= 0 and completion >= 0:
        details = usage.get("prompt_tokens_details")
        if not details:
            return prompt, 0, completion
    tokens = usage_tokens(usage)
    return tokens.prompt, tokens.cached, tokens.completion


def check_priced(plan: Plan, settings: RunSettings, table: PriceTable) -> None:
    """Before a capped run: every model of the lines to run must have a price, or the cap cannot be kept
    (`UsageError`, exit 2, nothing sent). One pass over the input, only when there is a cap."""
    models: set[str] = set()
    for item in iter_pending(plan, settings.defaults):
        if isinstance(item, Job):
            models.add(str(item.body.get("model")))
    unpriced = sorted(m for m in models if table.price_for(m) is None)
    if unpriced:
        raise UsageError(f"--max-cost: no price for {', '.join(unpriced)}: a cap cannot be kept without one; add "
                         "it with --prices FILE (a TOML or JSON file: [models.NAME] input = ..., output = ...)")


def cost_lines(cost: dict[str, Any]) -> list[str]:
    """The summary's lines about money, from `Spending.to_dict()`."""
    lines = []
    by_model = cost.get("by_model") or {}
    if by_model or not cost.get("unknown_price"):
        lines.append(f"  cost       {usd(cost['total_usd'])}: prompt {usd(cost['prompt_usd'])}, cached "
                     f"{usd(cost['cached_usd'])}, completion {usd(cost['completion_usd'])}")
        if len(by_model) > 1:
            lines.append("             " + ", ".join(f"{m} {usd(v['total_usd'])}" for m, v in by_model.items()))
    for model, tally in (cost.get("unknown_price") or {}).items():
        lines.append(f"  cost       unknown for {model} ({tally['requests']:,} answers, {tally['prompt_tokens']:,} "
                     f"prompt + {tally['completion_tokens']:,} completion tokens): no price, not counted "
                     "(add it with --prices FILE)")
    cap = cost.get("cap")
    if cap is not None:
        fate = cost.get("unknown_fate_attempts") or 0
        note = (f" ({fate:,} attempt{'s' if fate > 1 else ''} of unknown fate counted in full: "
                f"{usd(cost['unknown_fate_usd'])})" if fate else "")
        shared = cap.get("shared")
        if shared:
            fleet = shared.get("fleet_spent_usd")
            by_fleet = f"{usd(fleet)} spent by the fleet, " if fleet is not None else ""
            lines.append(f"  cap        {usd(cap['cap_usd'])} shared by the fleet ({shared['name']}), "
                         f"{'reached' if cap['reached'] else 'not reached'}: {by_fleet}"
                         f"{usd(cap['spent_usd'])} by this process{note}")
        else:
            lines.append(f"  cap        {usd(cap['cap_usd'])}, {'reached' if cap['reached'] else 'not reached'}: "
                         f"{usd(cap['spent_usd'])} spent{note}")
        if cap["reached"]:
            lines.append(f"             {cap['requests_left']:,} requests left: rerun with a higher --max-cost "
                         "to resume")
    return lines
