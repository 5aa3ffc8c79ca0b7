"""The dispatcher: reads the planned lines in file order and admits each through pacing to a worker.

Invalid lines and requests that can never fit the budget become error lines without being sent.
"""

from __future__ import annotations

from typing import Any

from batchchat.config.settings import RunSettings
from batchchat.input.parse import InvalidLine, parse_line
from batchchat.input.plan import Plan
from batchchat.input.reader import iter_raw_lines
from batchchat.online.stop import StopControl
from batchchat.online.workers import WorkerPool
from batchchat.online.write_stage import hand_over
from batchchat.output.lines import Result
from batchchat.pacing.pacer import Pacer
from batchchat.report.counters import Counters


async def dispatch(plan: Plan, settings: RunSettings, pacer: Pacer, counters: Counters, control: StopControl,
                   pool: WorkerPool, results: Any, spending: Any = None) -> None:
    """Admit every line of `plan` with work to do, in file order, until the plan ends or the run stops."""
    skip = plan.skip
    for line_no, raw in iter_raw_lines(plan.path):
        if line_no > plan.last_line:
            break  # the rest is done already
        if line_no < len(skip) and skip[line_no]:
            continue
        item = parse_line(raw, line_no, settings.defaults)
        if isinstance(item, InvalidLine):
            await hand_over(results, Result(item.custom_id, line_no, error_code="invalid_request",
                                            error_message=item.describe(plan.display)))
            continue
        prompt, cost = pacer.charge(item)
        too_large = pacer.too_large(cost)
        if too_large is not None:
            await hand_over(results, Result(item.custom_id, line_no, error_code="request_too_large",
                                            metadata=item.metadata, error_message=too_large))
            continue
        await pacer.admit(cost)
        # a cancel can miss a task woken in the same loop turn as the stop; the spending cap reserves last, so
        # that money is held only by requests about to be sent
        if control.stopping or (spending is not None and not await spending.reserve(item, prompt)):
            pacer.release()
            return
        counters.in_flight += 1
        pool.submit((item, prompt, cost))
