"""A fake-clock model of a run's pacing against each kind of server, for tests that must not sleep.

The client side is batchchat's own pacing (`Pacer`: the budget, its store, the concurrency gate, the retry
wait) on a virtual-time event loop: time moves only when every task waits, so a minute of traffic at 30,000
RPM runs in a second or two of CPU. The server side is the simulator's own `Limiter` (the oracle: it counts
what it admitted), reached after a random time on the wire and answering after a random latency, with its
x-ratelimit-* headers and the 429's retry headers in the style asked for. Only requests, their sizes and their
timing are modelled: no HTTP, no output file.
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchchat.config.settings import JobDefaults, RetryPolicy, RunSettings
from batchchat.http.outcomes import Retryable, Success
from batchchat.http.retry import backoff_wait
from batchchat.input.parse import Job, parse_line
from batchchat.pacing.pacer import Pacer
from batchchat.simulator.limits import Limiter

MODEL = "gpt-4o-mini"


class _Selector(selectors.SelectSelector):
    """Never blocks: a wait for a timer moves the loop's virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if not ready and self.loop is not None:
            if timeout is None:
                raise RuntimeError("deadlock: every task waits and no timer is set")
            self.loop.now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer when nothing is ready (no real sleeping)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self.now = start

    def time(self) -> float:
        return self.now


def run_virtual(main: Callable[[], Any]) -> Any:
    """Run the coroutine function `main` on a fresh virtual-time loop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())


@dataclass
class Server:
    """What the model's server is: a `Limiter` kind, its header mode and its 429's retry style."""

    rpm: int | None
    tpm: int | None
    kind: str = "bucket"
    headers: str = "minute"
    retry: str = "openai"  # openai, litellm, none
    window: float = 1.0


@dataclass
class Outcome:
    """What the server admitted, from its own log, and what the client saw."""

    admitted: list[tuple[float, int]] = field(default_factory=list)  # (server time, tokens)
    refused: int = 0
    attempts: int = 0
    elapsed: float = 0.0
    gave_up: int = 0

    def rates(self, head: float = 0.0, tail: float = 0.0) -> tuple[float, float]:
        """(requests, tokens) per minute the server admitted in steady state: from the first admission `head`
        seconds after the second one (the first may be auto mode's probe, alone until its answer) to the last
        admission `tail` seconds before the last one, counting the admissions in between as the work of that
        span (the last one's work belongs to the span after)."""
        admitted = self.admitted
        if len(admitted) < 3:
            return 0.0, 0.0
        start, end = admitted[1][0] + head, admitted[-1][0] - tail
        i = next((k for k, (at, _) in enumerate(admitted) if at >= start), 0)
        j = max((k for k, (at, _) in enumerate(admitted) if at <= end), default=len(admitted) - 1)
        if j - i < 2:
            i, j = 1, len(admitted) - 1
        span = admitted[j][0] - admitted[i][0]
        if span <= 0.0:
            return 0.0, 0.0
        return (j - i) / span * 60.0, sum(t for _, t in admitted[i:j]) / span * 60.0

    def share(self, server: Server, head: float = 0.0, tail: float = 0.0) -> float:
        """The admitted rate as a share of the binding limit (the larger of the two shares)."""
        rpm, tpm = self.rates(head, tail)
        shares = [rpm / server.rpm if server.rpm else 0.0, tpm / server.tpm if server.tpm else 0.0]
        return max(shares)


def _job(i: int, size: int) -> Job:
    """A request whose whole up-front charge is `size` tokens: a short chat prompt and the rest as max_tokens, or
    (below a chat prompt's framing) an embedding of `size` x 4 characters."""
    text = f"request {i:07d} of the model"  # 7 tokens of text + 7 of framing at 4 characters a token
    if size > 15:
        body: dict[str, Any] = {"model": MODEL, "max_tokens": size - 14,
                                "messages": [{"role": "user", "content": text}]}
        url = "/v1/chat/completions"
    else:
        body, url = {"model": MODEL, "input": "x" * (4 * size)}, "/v1/embeddings"
    job = parse_line(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": url, "body": body}), i + 1,
                     JobDefaults())
    assert isinstance(job, Job)
    return job


async def _sleep(seconds: float) -> None:
    """As a real sleep, one takes some time: a wait of a few ulps must not spin on a clock that stands still."""
    await asyncio.sleep(max(seconds, 1e-6))


def _headers(limiter: Limiter) -> dict[str, str]:
    raw = limiter.headers("key", MODEL).decode()
    return dict(line.split(": ", 1) for line in raw.split("\r\n") if line)


def _retry_after(server: Server, limiter: Limiter, wait: float) -> float | None:
    """The wait a 429's retry headers name, as the simulator words them (`SimulatorApp._retry_headers`)."""
    if server.retry == "openai":
        return max(1, math.ceil(wait * 1000 - 1e-6)) / 1000
    if server.retry == "litellm":
        return float(max(1, math.ceil(limiter.minute_left() - 1e-6)))
    return None


def server_for(server: Server) -> Limiter:
    """The simulator's counters for `server`, on the running loop's virtual clock (one key: clients share it)."""
    return Limiter(server.rpm, server.tpm, server.window, clock=asyncio.get_running_loop().time, kind=server.kind,
                   header_mode=server.headers)


async def simulate(server: Server, sizes: Sequence[int], *, rpm: float | None = None, tpm: float | None = None,
                   adapt: str = "auto", concurrency: int = 256, latency: tuple[float, float] = (0.3, 2.0),
                   wire: tuple[float, float] = (0.0005, 0.005), real: float = 1.0, seed: int = 0,
                   max_attempts: int = 30, limiter: Limiter | None = None) -> Outcome:
    """Send one request per entry of `sizes` (its whole up-front charge, in tokens) through batchchat's pacing to
    `server`; `rpm`/`tpm`/`adapt` are what the client is told; the server counts `real` x each prompt estimate
    (settled after the answer); `limiter`: the server's counters, when shared with another client (`server_for`).
    Returns what the server admitted to this client."""
    loop = asyncio.get_running_loop()
    limiter = limiter or server_for(server)
    settings = RunSettings(input="-", rpm=rpm, tpm=tpm, adapt=adapt, concurrency=concurrency,
                           retry=RetryPolicy(max_attempts=max_attempts, max_wait=60.0))
    pacer = Pacer(settings, clock=loop.time, sleep=_sleep)
    rng = random.Random(seed)
    out = Outcome()
    start = loop.time()
    jobs = [_job(i, size) for i, size in enumerate(sizes)]

    async def one(job: Job, prompt: int, cost: int, ticket: Any) -> None:
        attempt = 1
        try:
            while True:
                out.attempts += 1
                await asyncio.sleep(rng.uniform(*wire))
                server_prompt = round(prompt * real)
                charge = server_prompt + cost - prompt
                decision = limiter.admit("key", charge, MODEL)
                headers = _headers(limiter)
                if decision.ok:
                    out.admitted.append((loop.time(), charge))
                    took = rng.uniform(*latency)
                    await asyncio.sleep(took)
                    usage = {"prompt_tokens": server_prompt, "completion_tokens": 1}
                    await pacer.observe(job, ticket, Success(200, {"usage": usage}, b"", None, headers), took)
                    await pacer.settle(job, prompt, usage)
                    return
                out.refused += 1
                await asyncio.sleep(rng.uniform(*wire))
                if math.isinf(decision.wait):
                    out.gave_up += 1
                    return
                outcome = Retryable("rate_limited", "429", 429, _retry_after(server, limiter, decision.wait),
                                    b"", None, headers)
                await pacer.observe(job, ticket, outcome, 0.0)
                if attempt >= max_attempts:
                    out.gave_up += 1
                    return
                state = _State(outcome, attempt)
                await asyncio.sleep(backoff_wait(settings.retry, state))  # type: ignore[arg-type]
                attempt += 1
                ticket = await pacer.readmit(job, cost)
        finally:
            pacer.release()

    async with asyncio.TaskGroup() as group:
        for job in jobs:
            prompt, cost = pacer.charge(job)
            ticket = await pacer.admit(job, cost)
            group.create_task(one(job, prompt, cost, ticket))
    out.elapsed = loop.time() - start
    return out


class _Future:
    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


class _State:
    """The part of tenacity's RetryCallState that `backoff_wait` reads."""

    def __init__(self, outcome: Any, attempt: int) -> None:
        self.outcome = _Future(outcome)
        self.attempt_number = attempt
