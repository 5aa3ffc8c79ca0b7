"""Fail fast when nothing can succeed: a closed port, a DNS name that does not resolve, a base URL that answers
404/405 to everything, or a gateway that refuses every request with the same client error.

`EndpointHealth` watches the outcome of every attempt from the start of the run. When the first
`threshold` attempts in a row all end in the same failure (the same connection error, or the same 4xx
status with the same error message), it calls `on_dead` once with a message naming the URL tried. The first
attempt that ends otherwise (a success, a 429, a 5xx, a different failure) disarms it for the rest of the
run, so transient blips among successes never trip it. 401/403 are already fatal on their own (exit 3).
"""

from __future__ import annotations

from collections.abc import Callable

from batchchat.config.settings import EndpointConfig
from batchchat.errors import ExitCode
from batchchat.http.outcomes import Failed, Outcome, Retryable
from batchchat.http.sender import Sender


def dead_threshold(concurrency: int) -> int:
    """How many identical failures in a row, from the start, stop a run: max(8, min(concurrency, 32))."""
    return max(8, min(concurrency, 32))


def _failure_key(outcome: Outcome) -> str | None:
    """What makes two failures "the same", or None for an outcome that says the endpoint can answer."""
    if isinstance(outcome, Retryable):
        if outcome.reason == "connection" or (outcome.reason == "timeout"
                                              and outcome.message.startswith("timeout: could not connect")):
            return outcome.message
        return None  # 429, 5xx, read timeouts, broken bodies: a server that is there
    if isinstance(outcome, Failed) and outcome.status is not None and 400 <= outcome.status < 500:
        return outcome.message  # "HTTP 404: ..." names the status and the server's own message
    return None


class EndpointHealth:
    """Counts identical failures from the start of a run; trips once after `threshold` of them in a row."""

    __slots__ = ("_armed", "_key", "_on_dead", "_streak", "threshold", "tripped")

    def __init__(self, threshold: int, on_dead: Callable[[str, str], None]) -> None:
        self.threshold = threshold
        self._on_dead = on_dead  # called with (the failure's message, the endpoint path) once, when it trips
        self._armed = True
        self._key: str | None = None
        self._streak = 0
        self.tripped = False

    def observe(self, outcome: Outcome, path: str) -> None:
        """Count one attempt's outcome (sent to the endpoint `path`)."""
        if not self._armed:
            return
        key = _failure_key(outcome)
        if key is None or (self._key is not None and key != self._key):
            self._armed = False  # the endpoint answered, or failures differ: not a dead endpoint
            return
        self._key = key
        self._streak += 1
        if self._streak >= self.threshold:
            self._armed = False
            self.tripped = True
            self._on_dead(key, path)


class WatchedSender:
    """A `Sender` that shows every outcome to an `EndpointHealth` and keeps the endpoint paths it sent to
    (the engine wraps its sender in one)."""

    __slots__ = ("_health", "_sender", "paths")

    def __init__(self, sender: Sender, health: EndpointHealth) -> None:
        self._sender = sender
        self._health = health
        self.paths: dict[str, None] = {}  # in the order first sent to

    async def send(self, path: str, content: bytes) -> Outcome:
        """Send through the wrapped sender, then count the outcome."""
        outcome = await self._sender.send(path, content)
        if path not in self.paths:
            self.paths[path] = None
        self._health.observe(outcome, path)
        return outcome

    async def aclose(self) -> None:
        """Close the wrapped sender."""
        await self._sender.aclose()


def dead_message(threshold: int, failure: str, url: str, base_url: str) -> str:
    """The message of a run stopped by `EndpointHealth`."""
    hint = ""
    if failure.startswith(("HTTP 404", "HTTP 405")) and not base_url.rstrip("/").endswith("/v1"):
        hint = " (the base URL is used as given: did you mean --base-url ending in /v1?)"
    return (f"the first {threshold} attempts all failed the same way at {url}: {failure}{hint}; "
            "nothing can succeed there, so the run stopped (check --base-url, the key and the model)")


def watched(sender: Sender, endpoint: EndpointConfig, concurrency: int,
            fail: Callable[[ExitCode, str], None]) -> WatchedSender:
    """`sender` watched by an `EndpointHealth` that calls `fail(ExitCode.DEAD_ENDPOINT, message)` when it trips."""
    threshold = dead_threshold(concurrency)

    def dead(failure: str, path: str) -> None:
        fail(ExitCode.DEAD_ENDPOINT, dead_message(threshold, failure, endpoint.url_for(path), endpoint.base_url))

    return WatchedSender(sender, EndpointHealth(threshold, dead))
