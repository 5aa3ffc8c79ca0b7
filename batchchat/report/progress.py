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


def status_parts(counters: Counters, rates: tuple[float, float], spent: float | None = None,
                 waiting: str | None = None) -> list[str]:
    """The figures of a run, most important first: done/total of the whole job (an earlier run's share
    included), failed, requests/s, ETA; then money spent (when known), tokens/min, in flight, the requests
    waiting longest (when some wait long), retries, 429s."""
    per_second, per_minute = rates
    done, total = counters.skipped + counters.done, counters.skipped + counters.total
    pct = 100.0 * done / total if total else 100.0
    return [
        f"{done:,}/{total:,} done ({pct:.0f}%)", f"{counters.failed:,} failed", f"{per_second:,.1f} req/s",
        f"ETA {_eta(counters, per_second)}", *([] if spent is None else [f"{usd(spent)} spent"]),
        f"{per_minute:,.0f} tok/min", f"{counters.in_flight:,} in flight", *([] if waiting is None else [waiting]),
        f"{counters.retries:,} retries", f"{counters.rate_limited:,} x 429",
    ]


def status_line(counters: Counters, rates: tuple[float, float], width: int | None = None,
                spent: float | None = None, waiting: str | None = None) -> str:
    """One line of figures, as many as fit in `width` characters (all when None), most important first; the
    first four (done/total, failed, rate, ETA) always show."""
    parts = status_parts(counters, rates, spent, waiting)
    if width is not None and len(", ".join(parts[:4])) > width:
        parts[0] = parts[0].replace(" done", "")
    line = ", ".join(parts[:4])
    for part in parts[4:]:
        if width is not None and len(line) + 2 + len(part) > width:
            break
        line += ", " + part
    return line


class Progress:
    """Shows a run's counters until closed. `mode`: auto (bar on a terminal, else log), bar, log, off."""

    MIN_BAR = 4  # columns: the bar itself, at its narrowest
    FIRST_LOG_AFTER = 2.0  # seconds: a log shows the first figures this soon, whatever the interval
    WAITING_EVERY = 10.0  # seconds between lines above the bar naming the requests that wait long

    def __init__(self, counters: Counters, mode: str = "auto", interval: float | None = None,
                 stream: TextIO | None = None, header: str | None = None,
                 spent: Callable[[], float | None] | None = None,
                 waiting: Callable[[], str | None] | None = None) -> None:
        self._spent = spent or (lambda: None)  # USD spent so far (None: not shown)
        self._waiting = waiting or (lambda: None)  # the requests waiting longest (None: nobody waits long)
        self._waiting_said = -float("inf")  # when the bar last had a line above it naming them
        self._counters = counters
        self._stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self._stream.isatty() else "log"
        self.mode = mode
        self._interval = interval if interval is not None else (0.25 if mode == "bar" else 10.0)
        self._header = header  # the log's first line: input, output, total, endpoint, limits
        self._rates = _Rates()
        self._bar = None
        self._task = None
        self._running = False

    async def run(self) -> None:
        """Refresh until cancelled."""
        if self.mode == "off":
            return
        self._running = True
        if self.mode == "bar":
            self._start_bar()
        elif self._header:
            self._log(self._header)
        first = min(self._interval, self.FIRST_LOG_AFTER) if self.mode == "log" else self._interval
        await anyio.sleep(first)
        while True:
            self.refresh()
            await anyio.sleep(self._interval)

    def refresh(self) -> None:
        """Draw the bar, or print one log line."""
        rates = self._rates.update(self._counters)
        counters = self._counters
        if self._bar is not None:
            # the bar takes what the figures leave: at 80 columns done/total, failed, rate and ETA all show
            width = self._bar.console.width - len("batchchat") - 4  # two column gaps and a spare column
            waiting = self._waiting()
            status = status_line(counters, rates, width - self.MIN_BAR, self._spent(), waiting)
            self._bar.columns[1].bar_width = max(self.MIN_BAR, min(40, width - len(status)))
            self._bar.update(self._task, completed=counters.skipped + counters.done,
                             total=(counters.skipped + counters.total) or None, status=status)
            now = time.monotonic()
            if waiting is not None and waiting not in status and now - self._waiting_said >= self.WAITING_EVERY:
                self._waiting_said = now  # too wide for the bar's line: said above it, now and then
                self._bar.console.print(f"batchchat: {waiting}")
            self._bar.refresh()
        elif self.mode == "log":
            self._log(status_line(counters, rates, spent=self._spent(), waiting=self._waiting()))

    def _log(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"{stamp} batchchat: {text}", file=self._stream, flush=True)

    def close(self) -> None:
        """Final refresh, then release the terminal."""
        if self._bar is not None:
            self.refresh()
            self._bar.stop()
            self._bar = None
        elif self.mode == "log" and self._running:  # the log ends on the final figures
            self.refresh()
        self._running = False

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as RichProgress

        console = Console(file=self._stream)
        self._bar = RichProgress(
            TextColumn("[bold]batchchat"), BarColumn(), TextColumn("{task.fields[status]}"),
            console=console, auto_refresh=False, transient=False,
        )
        counters = self._counters
        self._task = self._bar.add_task("run", completed=counters.skipped,
                                        total=(counters.skipped + counters.total) or None, status="starting")
        self._bar.start()
