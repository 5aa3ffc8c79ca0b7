"""The dispatcher: reads the planned lines in file order into one lane per model, and admits each lane's lines
through its model's budget to a worker.

A lane is a bounded queue with its own admission loop, so a line waiting for its model's budget never holds
back the lines of other models (no head-of-line blocking). Memory stays bounded: at most `LANE_DEPTH` parsed
lines wait in each lane; when one lane is full the reader waits for it, and the other lanes go on with what
they hold (that model is then the run's bottleneck). Invalid lines and requests that can never fit their
model's budget become error lines without being sent.
"""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from batchchat.config.settings import RunSettings
from batchchat.input.parse import InvalidLine, Job
from batchchat.input.plan import Plan, iter_pending
from batchchat.online.stop import StopControl
from batchchat.online.workers import WorkerPool
from batchchat.online.write_stage import hand_over
from batchchat.output.lines import Result
from batchchat.pacing.pacer import Pacer, job_model
from batchchat.report.counters import Counters

LANE_DEPTH = 256  # parsed lines waiting per model: the reader runs at most this far ahead of a model's budget


async def dispatch(plan: Plan, settings: RunSettings, pacer: Pacer, counters: Counters, control: StopControl,
                   pool: WorkerPool, results: Any, spending: Any = None, cache: Any = None) -> None:
    """Admit every line of `plan` with work to do, each model's in file order, until the plan ends or the run
    stops. With `cache` (`cache.hook.RunCache`), a line the cache answers is written from it instead."""
    lanes: dict[str, ObjectSendStream[tuple[Job, int, int]]] = {}
    async with anyio.create_task_group() as group:
        try:
            for item in iter_pending(plan, settings.defaults):
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
                lane = lanes.get(model)
                if lane is None:
                    lane, receive = anyio.create_memory_object_stream[tuple[Job, int, int]](LANE_DEPTH)
                    lanes[model] = lane
                    group.start_soon(_admit_lane, receive, pacer, counters, control, pool, results, spending)
                await lane.send((item, prompt, cost))
        finally:
            for lane in lanes.values():
                lane.close()


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
