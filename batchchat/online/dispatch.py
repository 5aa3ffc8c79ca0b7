"""The dispatcher: one reader per lane of the plan (a model's lines, or the invalid ones), each reading its own
lines in file order into a queue per model, and admitting each queue's lines through its model's budget to a
worker.

Each model's lines are read by a reader of their own (the pre-scan recorded each line's lane: a byte a line),
so a model runs at its own limit whatever the file's order and mix: a file whose first thousand lines are one
model and whose next hundred are another runs them side by side, not one after the other. Memory stays bounded:
at most `LANE_DEPTH` parsed lines wait in each queue, and a reader whose queue is full waits for it alone.
Invalid lines and requests that can never fit their model's budget become error lines without being sent.
"""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from batchchat.config.settings import RunSettings
from batchchat.input.parse import InvalidLine, Job
from batchchat.input.plan import Plan, iter_lane
from batchchat.online.stop import StopControl
from batchchat.online.workers import WorkerPool
from batchchat.online.write_stage import hand_over
from batchchat.output.lines import Result
from batchchat.pacing.pacer import Pacer, job_model
from batchchat.report.counters import Counters

LANE_DEPTH = 256  # parsed lines waiting per model: a reader runs at most this far ahead of its model's budget


async def dispatch(plan: Plan, settings: RunSettings, pacer: Pacer, counters: Counters, control: StopControl,
                   pool: WorkerPool, results: Any, spending: Any = None, cache: Any = None) -> None:
    """Admit every line of `plan` with work to do, each model's in file order and at its own pace, until the plan
    ends or the run stops. With `cache` (`cache.hook.RunCache`), a line the cache answers is written from it
    instead."""
    async with anyio.create_task_group() as group:  # one group: a failure reaches the caller in one group
        for lane in sorted(plan.lanes_used):
            group.start_soon(_read, group, plan, lane, settings, pacer, counters, control, pool, results, spending,
                             cache)


async def _read(group: Any, plan: Plan, lane: int, settings: RunSettings, pacer: Pacer, counters: Counters,
                control: StopControl, pool: WorkerPool, results: Any, spending: Any, cache: Any) -> None:
    """Read one lane of the plan into a queue per model (one, but for the lane shared past 253 models), each
    admitted by a task of `group`."""
    queues: dict[str, ObjectSendStream[tuple[Job, int, int]]] = {}
    try:
        for item in iter_lane(plan, settings.defaults, lane):
            line_no = item.line_no
            if isinstance(item, InvalidLine):
                await hand_over(results, Result(item.custom_id, line_no, error_code="invalid_request",
                                                error_message=item.describe(plan.display)))
                continue
            if cache is not None and (hit := cache.serve(item)) is not None:  # --cache: never sent
                await hand_over(results, hit)
                continue
            prompt, cost = pacer.charge(item)
            too_large = pacer.too_large(item, cost)
            if too_large is not None:
                await hand_over(results, Result(item.custom_id, line_no, error_code="request_too_large",
                                                metadata=item.metadata, error_message=too_large))
                continue
            model = job_model(item)
            queue = queues.get(model)
            if queue is None:
                queue, receive = anyio.create_memory_object_stream[tuple[Job, int, int]](LANE_DEPTH)
                queues[model] = queue
                group.start_soon(_admit_lane, receive, pacer, counters, control, pool, results, spending)
            await queue.send((item, prompt, cost))
    finally:
        for queue in queues.values():
            queue.close()


async def _admit_lane(receive: ObjectReceiveStream[tuple[Job, int, int]], pacer: Pacer, counters: Counters,
                      control: StopControl, pool: WorkerPool, results: Any, spending: Any = None) -> None:
    """Admit one model's lines in their order, each through a concurrency slot and the model's budget."""
    async with receive:
        async for item, prompt, cost in receive:
            too_large = pacer.too_large(item, cost)  # the model's limit may have been learned while it waited
            if too_large is not None:
                await hand_over(results, Result(item.custom_id, item.line_no, error_code="request_too_large",
                                                metadata=item.metadata, error_message=too_large))
                continue
            ticket = await pacer.admit(item, cost)
            # a cancel can miss a task woken in the same loop turn as the stop; the spending cap reserves last, so
            # that money is held only by requests about to be sent
            if control.stopping or (spending is not None and not await spending.reserve(item, prompt)):
                pacer.release()
                return
            counters.in_flight += 1
            pool.submit((item, prompt, cost, ticket))
