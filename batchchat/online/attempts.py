"""One request from admission to result: its attempts (a first one, then retries through the policy), the
feedback of every answer to pacing, and the result line it ends as."""

from __future__ import annotations

import time
from typing import Any

import orjson

from batchchat.config.settings import RunSettings
from batchchat.http.outcomes import Failed, Fatal, Outcome, Retryable, Success
from batchchat.http.retry import retry_after_failure
from batchchat.http.sender import Sender
from batchchat.input.parse import Job
from batchchat.online.attempt_watch import AttemptWatch
from batchchat.online.health import EndpointHealth
from batchchat.online.stop import StopControl
from batchchat.online.write_stage import hand_over
from batchchat.output.lines import Result, request_fingerprint
from batchchat.pacing.budget import Ticket
from batchchat.pacing.pacer import Pacer, job_model
from batchchat.report.counters import Counters


class Requester:
    """Sends admitted requests and hands their results to the write stage."""

    __slots__ = ("_control", "_counters", "_health", "_pacer", "_results", "_sender", "_settings", "_spending",
                 "_watch")

    def __init__(self, settings: RunSettings, pacer: Pacer, counters: Counters, control: StopControl,
                 sender: Sender, results: Any, spending: Any = None, *, health: EndpointHealth | None = None,
                 watch: AttemptWatch | None = None) -> None:
        self._settings = settings
        self._pacer = pacer
        self._counters = counters
        self._control = control
        self._sender = sender
        self._results = results
        self._spending = spending  # money.guard.Spending: prices each attempt and keeps the cap
        self._health = health  # judges whether anything can succeed (per endpoint path and model)
        self._watch = watch  # sends each attempt, and gives up those that wait past the attempt timeout

    async def work(self, admitted: tuple[Job, int, int, Ticket]) -> None:
        """Send one admitted request (`job`, prompt estimate, charge, its admission) to its end; its slot goes
        with its result."""
        job, prompt, cost, first_ticket = admitted
        counters = self._counters
        pacer = self._pacer
        started = time.monotonic()
        content = orjson.dumps(job.body)
        attempts = 0
        cuts = 0  # attempts of this request the watch gave up
        handed = False
        health = self._health
        watch = self._watch

        async def attempt() -> Outcome:
            nonlocal attempts, cuts
            ticket = first_ticket
            if attempts:
                counters.retries += 1
                too_large = pacer.too_large(job, cost)  # the server may have taught a smaller limit since
                if too_large is not None:
                    return Failed("request_too_large", too_large)
                ticket = await pacer.readmit(job, cost)
            if health is not None and health.any_dead and (dead := health.dead_sender(job)) is not None:
                # its (path, model) failed its first attempts alike: the group's error, nothing sent
                outcome = await (self._spending.send(job, dead, content) if self._spending is not None
                                 else dead.send(job.url, content))
                await pacer.observe(job, ticket, outcome, 0.0)  # no answer: whoever waits on this one goes
                return outcome
            attempts += 1
            counters.attempts += 1
            sender = watch.attempt(job.custom_id, cuts) if watch is not None else self._sender
            sent_at = time.monotonic()
            outcome = await (self._spending.send(job, sender, content) if self._spending is not None
                             else sender.send(job.url, content))
            if watch is not None and sender.cut:  # type: ignore[union-attr]
                cuts += 1
            if health is not None and health.watching:
                health.observe(outcome, job.url, job_model(job))
            await pacer.observe(job, ticket, outcome, time.monotonic() - sent_at)
            if isinstance(outcome, Retryable) and outcome.status == 429:
                counters.rate_limited += 1
            return outcome

        try:
            outcome = await attempt()
            if isinstance(outcome, Retryable):
                outcome = await retry_after_failure(outcome, attempt, self._settings.retry,
                                                    time.monotonic() - started,
                                                    stopped=lambda: self._control.stopping)
                if isinstance(outcome, Retryable) and self._control.stopping:
                    return  # stopped before its retries ran out: not finished, a rerun sends it
            if isinstance(outcome, Fatal):
                self._control.fail(outcome.exit_code, outcome.message)
                return
            real_prompt = await pacer.settle(job, prompt, outcome.body.get("usage")) \
                if isinstance(outcome, Success) else None
            result = self._result(job, outcome, attempts, time.monotonic() - started, prompt, real_prompt)
            # the slot goes with the result and is freed once it is on disk: at most --concurrency answers
            # are ever paid for and not yet written, which bounds what a crash can lose
            result.holds_slot = True
            handed = await hand_over(self._results, result)
        finally:
            if not handed:
                pacer.release()
                counters.in_flight -= 1

    def _result(self, job: Job, outcome: Outcome, attempts: int, latency: float, prompt: int,
                real_prompt: int | None) -> Result:
        if isinstance(outcome, Success):
            usage = outcome.body.get("usage")
            if real_prompt is not None:
                self._counters.estimated_prompt_tokens += prompt
                self._counters.estimated_prompt_actual += real_prompt
            return Result(job.custom_id, job.line_no, outcome.status, outcome.raw, outcome.request_id,
                          attempts=attempts, latency=latency, usage=usage if isinstance(usage, dict) else None,
                          metadata=job.metadata, fingerprint=request_fingerprint(job.url, job.body),
                          line_hash=job.line_hash,
                          cost_usd=self._spending.line_cost(job, usage) if self._spending is not None else None)
        assert not isinstance(outcome, Fatal)
        message = outcome.message
        if isinstance(outcome, Retryable):
            message = f"gave up after {attempts} attempts: {message}"
        return Result(job.custom_id, job.line_no, outcome.status, outcome.raw, outcome.request_id,
                      error_code=outcome.reason, error_message=message, attempts=attempts, latency=latency,
                      metadata=job.metadata)
