"""Live progress: a rich bar on a terminal, plain timestamped log lines when not on one (cron)."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

import anyio

from batchchat.money.cost import usd
from batchchat.report.counters import Counters


class _Rates:
    """Requests/s and tokens/min over the last few seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self._window = window
        self._samples: deque[tuple[float, int, int]] = deque()

    def update(self, counters: Counters) -> tuple[float, float]:
        now = time.monotonic()
        tokens = counters.prompt_tokens + counters.completion_tokens
        self._samples.append((now, counters.done, tokens))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
            self._samples.popleft()
        t0, done0, tokens0 = self._samples[0]
        span = now - t0
        if span <= 0:
            span = max(now - counters.started, 1e-9)
            return counters.done / span, tokens / span * 60.0
        return (counters.done - done0) / span, (tokens - tokens0) / span * 60.0


def _eta(counters: Counters, rate: float) -> str:
    remaining = counters.total - counters.done
    if remaining <= 0:
        return "0s"
    if rate <= 0:
        return "?"
    seconds = int(remaining / rate)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def status_line(counters: Counters, rates: tuple[float, float], spent: float | None = None) -> str:
    """One line of figures: done/total, rates, retries, errors, money spent (when known), ETA."""
    per_second, per_minute = rates
    pct = 100.0 * counters.done / counters.total if counters.total else 100.0
    money = "" if spent is None else f"{usd(spent)} spent, "
    return (
        f"{counters.done:,}/{counters.total:,} done ({pct:.0f}%), {counters.failed:,} failed, "
        f"{per_second:,.1f} req/s, {per_minute:,.0f} tok/min, {counters.in_flight:,} in flight, "
        f"{counters.retries:,} retries, {counters.rate_limited:,} x 429, {money}ETA {_eta(counters, per_second)}"
    )


class Progress:
    """Shows a run's counters until closed. `mode`: auto (bar on a terminal, else log), bar, log, off."""

    def __init__(self, counters: Counters, mode: str = "auto", interval: float | None = None,
                 stream: TextIO | None = None, spent: Callable[[], float | None] | None = None) -> None:
        self._counters = counters
        self._spent = spent or (lambda: None)  # USD spent so far (None: not shown)
        self._stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self._stream.isatty() else "log"
        self.mode = mode
        self._interval = interval if interval is not None else (0.25 if mode == "bar" else 10.0)
        self._rates = _Rates()
        self._bar = None
        self._task = None

    async def run(self) -> None:
        """Refresh until cancelled."""
        if self.mode == "off":
            return
        if self.mode == "bar":
            self._start_bar()
        while True:
            await anyio.sleep(self._interval)
            self.refresh()

    def refresh(self) -> None:
        """Draw the bar, or print one log line."""
        rates = self._rates.update(self._counters)
        if self._bar is not None:
            self._bar.update(self._task, completed=self._counters.done, total=self._counters.total or None,
                             status=status_line(self._counters, rates, self._spent()))
            self._bar.refresh()
        elif self.mode == "log":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            line = status_line(self._counters, rates, self._spent())
            print(f"{stamp} batchchat: {line}", file=self._stream, flush=True)

    def close(self) -> None:
        """Final refresh, then release the terminal."""
        if self._bar is not None:
            self.refresh()
            self._bar.stop()
            self._bar = None

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as RichProgress

        console = Console(file=self._stream)
        self._bar = RichProgress(
            TextColumn("[bold]batchchat"), BarColumn(), TextColumn("{task.fields[status]}"),
            console=console, auto_refresh=False, transient=False,
        )
        self._task = self._bar.add_task("run", total=self._counters.total or None, status="starting")
        self._bar.start()
