"""Stopping a run: why it stopped, the exit code that says so, and how in-flight requests are let finish.

Stopping (a signal, a rejected key, a write failure) cancels dispatch at once; requests in flight get a grace
period to finish and be written (None: cancelled now); retries in backoff are not sent (`stopping`). The
first reason to stop decides the exit code: a signal after a rejected key keeps exit 3.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import anyio

from batchchat.errors import ExitCode


class StopControl:
    """The stop state of one run and the scopes it cancels."""

    __slots__ = ("_echo", "_grace", "dispatch_scope", "exit_code", "reason", "stopping", "task_group",
                 "workers_scope")

    def __init__(self, grace: float, echo: Callable[[str], None]) -> None:
        self._grace = grace
        self._echo = echo
        self.stopping = False
        self.reason: str | None = None
        self.exit_code = ExitCode.OK
        self.dispatch_scope: anyio.CancelScope | None = None
        self.workers_scope: anyio.CancelScope | None = None
        self.task_group: Any = None

    def stop(self, reason: str, grace: float | None) -> None:
        """Stop dispatching now; give in-flight requests `grace` seconds (None: cancel them now)."""
        self.stopping = True
        if self.reason is None and reason:
            self.reason = reason
        if self.dispatch_scope is not None:
            self.dispatch_scope.cancel()
        if self.workers_scope is None:
            return
        if grace is None:
            self.workers_scope.cancel()
        elif self.task_group is not None:
            self.task_group.start_soon(self._cancel_workers_after, grace)

    def fail(self, code: ExitCode, message: str) -> None:
        """Stop for a reason that decides the exit code (a rejected key: exit 3), unless one already did."""
        if self.exit_code in (ExitCode.OK, ExitCode.FAILURES):
            self.exit_code = code
            self._echo(f"batchchat: stopping: {message}")
            self.stop(message, grace=self._grace)

    def output_failed(self, message: str) -> None:
        """The output cannot be written: stop at once, exit 4."""
        self.exit_code = ExitCode.OUTPUT
        if self.reason is None:
            self.reason = message
        self.stop("", grace=None)

    async def watch_signals(self, in_flight: Callable[[], int]) -> None:
        """SIGINT/SIGTERM: stop with a grace period (exit 130 unless a reason came first); again: stop now."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self.stopping:
                    self.exit_code = ExitCode.INTERRUPTED
                    self._echo(f"batchchat: {name}: stopping; waiting up to {self._grace:g} s for "
                               f"{in_flight()} requests in flight (again to stop at once)")
                    self.stop(f"interrupted by {name}; rerun the same command to resume", self._grace)
                else:
                    again = " again" if self.exit_code == ExitCode.INTERRUPTED else ""
                    if self.exit_code == ExitCode.OK:
                        self.exit_code = ExitCode.INTERRUPTED
                    self._echo(f"batchchat: {name}{again}: stopping now")
                    self.stop("", grace=None)

    async def _cancel_workers_after(self, grace: float) -> None:
        await anyio.sleep(grace)
        if self.workers_scope is not None:
            self.workers_scope.cancel()
