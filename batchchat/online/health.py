"""Fail fast when nothing can succeed, judged where it holds: for the endpoint, and per endpoint path and model.

`EndpointHealth` watches every attempt's outcome from the start of the run, two ways:

- **silence** (no HTTP answer at all, from anyone): the first attempts all failing the same way without an
  answer mean the endpoint is dead: `threshold` in a row of the same connection error (a closed port, a DNS
  name that does not resolve), or `SILENT_TIMEOUTS` in a row of timeouts with no answer (each of them already
  waited the whole `--timeout`). Any HTTP answer, or a different failure, disarms it for the rest of the run.
- **groups** (endpoint path, model): the first `threshold` attempts of one group all ending in the same client
  error (the same 4xx status and message: a mistyped model, a path the server does not serve, a gateway that
  refuses every request) make that group dead: its other lines get that error without being sent, and the
  other groups go on. A success, a 429, a 5xx or a different failure in the group disarms it.

The run stops with exit 7 when silence trips, or when every group the run has to send (`planned`) is dead:
then nothing it could send can succeed. 401/403 are fatal on their own (exit 3).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from batchchat.config.settings import EndpointConfig
from batchchat.errors import ExitCode
from batchchat.http.outcomes import Failed, Outcome, Retryable
from batchchat.input.parse import Job
from batchchat.pacing.pacer import job_model

SILENT_TIMEOUTS = 3  # timeouts in a row with no answer at all since the start: the endpoint does not answer

Group = tuple[str, str]  # (endpoint path, model)


def dead_threshold(concurrency: int) -> int:
    """How many identical failures in a row, from the start, stop a run: max(8, min(concurrency, 32))."""
    return max(8, min(concurrency, 32))


def _silent_key(outcome: Outcome) -> str | None:
    """What makes two failures without an answer "the same", or None for an outcome with an HTTP answer."""
    if isinstance(outcome, Retryable) and outcome.status is None and outcome.reason in ("connection", "timeout"):
        return outcome.message
    return None


def _client_error(outcome: Outcome) -> str | None:
    """The message of a final 4xx answer ("HTTP 404: ..." names the status and the server's own words), or None."""
    if isinstance(outcome, Failed) and outcome.status is not None and 400 <= outcome.status < 500:
        return outcome.message
    return None


def describe_group(model: str) -> str:
    """A group's model as a message names it."""
    return f"model {model!r}" if model else "requests that name no model"


class _GroupWatch:
    """One (path, model) group's streak of identical client errors, and what its unsent lines get once dead."""

    __slots__ = ("armed", "dead", "failure", "status", "streak")

    def __init__(self) -> None:
        self.armed = True
        self.failure: str | None = None
        self.status: int | None = None
        self.streak = 0
        self.dead: Failed | None = None

    async def send(self, path: str, content: bytes) -> Outcome:
        """A dead group's `Sender`: every line gets the group's failure, and nothing is sent."""
        assert self.dead is not None
        return self.dead

    async def aclose(self) -> None:
        """Nothing to close."""


class EndpointHealth:
    """Judges from the start of a run whether anything can succeed (see the module's docstring).

    `on_dead(message)` is called once, when nothing can: the run must stop. `on_group_dead(message)` is told of
    a dead group while others go on. `planned`: the (path, model) groups the run has to send (None: unknown,
    so a dead group stops the run). `url_for` turns a path into the URL the messages name.
    """

    __slots__ = ("_clock", "_groups", "_on_dead", "_on_group_dead", "_planned", "_silent", "_silent_armed",
                 "_silent_streak", "_started", "_url_for", "any_dead", "base_url", "threshold", "tripped",
                 "watching")

    def __init__(self, threshold: int, on_dead: Callable[[str], None], *,
                 planned: Collection[Group] | None = None, on_group_dead: Callable[[str], None] | None = None,
                 url_for: Callable[[str], str] = lambda path: path, base_url: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self._on_dead = on_dead
        self._on_group_dead = on_group_dead or (lambda message: None)
        self._planned = frozenset(planned) if planned is not None else None
        self._url_for = url_for
        self.base_url = base_url
        self._clock = clock
        self._started = clock()
        self._silent_armed = True
        self._silent: str | None = None
        self._silent_streak = 0
        self._groups: dict[Group, _GroupWatch] = {}
        self.watching = True  # False once nothing is left to judge: the caller may skip `observe`
        self.any_dead = False  # some group is dead: the caller asks `dead_sender` before sending
        self.tripped = False

    def dead_sender(self, job: Job) -> _GroupWatch | None:
        """For a line of a dead group, a `Sender` that gives it the group's failure without sending; else None."""
        group = self._groups.get((job.url, job_model(job)))
        return group if group is not None and group.dead is not None else None

    def observe(self, outcome: Outcome, path: str, model: str = "") -> None:
        """Count one attempt's outcome (sent to the endpoint `path` for `model`)."""
        if not self.watching:
            return
        answered = not isinstance(outcome, Retryable) or outcome.status is not None
        if self._silent_armed:
            if not answered:
                self._count_silence(outcome, path)
                return
            self._silent_armed = False  # the server is there
        if not answered:
            return
        group = self._groups.get((path, model))
        if group is None:
            group = self._groups[(path, model)] = _GroupWatch()
        if group.armed:
            self._count_group(group, outcome, path, model)

    def _count_silence(self, outcome: Outcome, path: str) -> None:
        key = _silent_key(outcome)
        if key is None or (self._silent is not None and key != self._silent):
            self._silent_armed = False  # failures differ: a flaky network, not a dead endpoint
            self._update_watching()
            return
        self._silent = key
        self._silent_streak += 1
        timeouts = isinstance(outcome, Retryable) and outcome.reason == "timeout" and "no answer" in key
        if self._silent_streak < (SILENT_TIMEOUTS if timeouts else self.threshold):
            return
        self._silent_armed = False
        url = self._url_for(path)
        if timeouts:
            waited = self._clock() - self._started
            message = (f"the first {self._silent_streak} attempts all timed out at {url} ({key}), and nothing "
                       f"has answered in the {waited:.0f} s since the run started; nothing can succeed there, so "
                       "the run stopped (check that the server is up and answering, or raise --timeout if its "
                       "answers take longer)")
        else:
            message = self.dead_message(self._silent_streak, key, url)
        self._trip(message)

    def _count_group(self, group: _GroupWatch, outcome: Outcome, path: str, model: str) -> None:
        failure = _client_error(outcome)
        if failure is None or (group.failure is not None and failure != group.failure):
            group.armed = False  # it answered, or failures differ: something in the group can succeed
            self._update_watching()
            return
        group.failure = failure
        group.status = outcome.status  # type: ignore[union-attr]
        group.streak += 1
        if group.streak < self.threshold:
            return
        group.armed = False
        url = self._url_for(path)
        what = describe_group(model)
        group.dead = Failed(outcome.reason, f"not sent: the first {group.streak} attempts for {what} at {url} "  # type: ignore[union-attr]
                                            f"all failed the same way: {failure}")
        self.any_dead = True
        dead = [(key, g) for key, g in self._groups.items() if g.dead is not None]
        if self._planned is None or self._planned <= {key for key, _ in dead}:
            if len(dead) == 1:
                self._trip(self.dead_message(group.streak, failure, url, what))
            else:
                each = "; ".join(f"{describe_group(m)} at {self._url_for(p)}: {g.failure}" for (p, m), g in dead)
                self._trip(f"every endpoint and model this run sends failed its first {self.threshold} attempts "
                           f"the same way ({each}); nothing can succeed there, so the run stopped (check "
                           "--base-url, the key and the models)")
            return
        self._on_group_dead(f"{what} at {url}: the first {group.streak} attempts all failed the same way: "
                            f"{failure}; its other lines get this error without being sent, and the rest of the "
                            "run goes on")

    def _update_watching(self) -> None:
        """Stop watching once silence is disarmed and every planned group has been judged alive."""
        if self._silent_armed or self._planned is None:
            return
        self.watching = not all(key in self._groups and not self._groups[key].armed for key in self._planned)

    def _trip(self, message: str) -> None:
        self.tripped = True
        self.watching = False
        self._on_dead(message)

    def dead_message(self, threshold: int, failure: str, url: str, what: str | None = None) -> str:
        """The message of a run stopped because the first `threshold` attempts failed alike."""
        hint = ""
        if failure.startswith(("HTTP 404", "HTTP 405")) and not self.base_url.rstrip("/").endswith("/v1"):
            hint = " (the base URL is used as given: did you mean --base-url ending in /v1?)"
        attempts = f"attempts for {what}" if what else "attempts"
        return (f"the first {threshold} {attempts} all failed the same way at {url}: {failure}{hint}; "
                "nothing can succeed there, so the run stopped (check --base-url, the key and the model)")


def endpoint_health(endpoint: EndpointConfig, concurrency: int, planned: Collection[Group] | None,
                    fail: Callable[[ExitCode, str], None], echo: Callable[[str], None]) -> EndpointHealth:
    """The health of a run: `fail(ExitCode.DEAD_ENDPOINT, message)` when nothing can succeed; a dead group is
    said through `echo`."""
    return EndpointHealth(dead_threshold(concurrency), lambda message: fail(ExitCode.DEAD_ENDPOINT, message),
                          planned=planned, on_group_dead=lambda message: echo(f"batchchat: {message}"),
                          url_for=endpoint.url_for, base_url=endpoint.base_url)
