"""Defects of #10 fixed in the layout commit (d618201), each with a test that fails on the code before it
(a6c68e4); why each would fail there is said in its docstring. Against the real simulator over loopback.

The event-loop tests run a ticker task beside the run and look at the longest gap between its ticks: work
done on the loop thread shows as a gap at least as long as that work (the bounds are generous: about half the
injected delay, on a loop that should tick every 10 ms, so that a loaded machine's hiccups do not fail them).
"""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import pytest
from cli_process import cli_env, running
from helpers import TEST_KEY, chat_lines, read_output, run_options, write_jobs

import batchchat
from batchchat.errors import ExitCode, ResultCallbackError, UsageError
from batchchat.input.reader import MAX_LINE_BYTES, iter_raw_lines
from batchchat.online import prepare as prepare_module
from batchchat.output import writer as writer_module
from batchchat.simulator import Simulator, SimulatorConfig


async def longest_gap_during(run: Callable[[], Any]) -> tuple[float, Any]:
    """Run `run()` beside a task that ticks every 10 ms; the longest gap between ticks, and run's result."""
    ticks = [time.monotonic()]
    result: list[Any] = []

    async def ticker() -> None:
        while True:
            await anyio.sleep(0.01)
            ticks.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        result.append(await run())
        ticks.append(time.monotonic())
        tg.cancel_scope.cancel()
    return max(b - a for a, b in pairwise(ticks)), result[0]


class SlowOs:
    """`os` for the writer module, with every write and fsync taking `delay` seconds (a slow disk)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        self.calls += 1
        time.sleep(self.delay)
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        self.calls += 1
        time.sleep(self.delay)
        os.fsync(fd)


async def test_a_slow_disk_does_not_stall_the_event_loop(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `ResultWriter.write` (os.write, os.fsync) ran on the loop thread, so each slow write was a gap
    of at least 0.7 s in the ticks (and in every socket and timer of the run)."""
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(8))
    warm = await batchchat.arun(src, output=tmp_path / "warm.jsonl", **run_options(sim))  # imports the sender
    assert warm.exit_code == 0
    slow = SlowOs(0.7)
    monkeypatch.setattr(writer_module, "os", slow)
    gap, summary = await longest_gap_during(lambda: batchchat.arun(src, **run_options(sim, concurrency=8)))
    assert summary.exit_code == 0 and summary.succeeded == 8
    assert slow.calls >= 2  # the slow disk was met (a write and the closing fsync at least)
    assert gap < 0.4, f"the event loop stalled {gap:.2f} s during a slow write"


async def test_the_prescan_resume_index_and_compaction_run_off_the_event_loop(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `load_resume_index`, `scan` and `compact` ran synchronously inside `arun`; here each is made to
    take 1 s more (besides reading a 20,000-line file and its output), which on the loop would be gaps of 1 s
    or more."""
    lines = chat_lines(20_000)
    src = write_jobs(tmp_path / "in.jsonl", lines)
    out = tmp_path / "in.results.jsonl"
    from batchchat.output.lines import Result, encode_result
    body = b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}'
    done = [encode_result(Result(f"r{i}", i + 1, 200, body), f"b{i}") for i in range(1, 20_000)]
    failed = encode_result(Result("r0", 1, 500, b"{}", error_code="http_500", error_message="x"), "b0")
    out.write_bytes(failed + b"".join(done))  # r0 is retried, so the output is compacted at the end

    def slowed(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            time.sleep(1.0)
            return real(*args, **kwargs)
        return call

    for module, name in ((prepare_module, "load_resume_index"), (prepare_module, "scan"), (prepare_module, "compact")):
        monkeypatch.setattr(module, name, slowed(getattr(module, name)))
    warm = await batchchat.arun(write_jobs(tmp_path / "warm.jsonl", chat_lines(1)), **run_options(sim))
    assert warm.exit_code == 0  # the sender is imported (once per process, on the loop)
    started = time.monotonic()
    gap, summary = await longest_gap_during(lambda: batchchat.arun(src, **run_options(sim)))
    assert summary.exit_code == 0 and summary.succeeded == 1 and summary.skipped_already_done == 19_999
    assert time.monotonic() - started >= 3.0  # the three slowed stages ran
    assert len(read_output(out)) == 20_000  # compacted: r0's error line is gone
    assert gap < 0.5, f"the event loop stalled {gap:.2f} s"


async def test_an_on_result_that_raises_ends_as_result_callback_error(tmp_path: Path, simulator: Any) -> None:
    """Before: the callback's own exception (here a KeyError) escaped `arun` inside an ExceptionGroup, not a
    `BatchchatError`, and the run went on sending."""
    sim = simulator(latency_ms=20)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(200))
    seen: list[str] = []

    def on_result(line: dict[str, Any]) -> None:
        seen.append(line["custom_id"])
        if len(seen) == 3:
            raise KeyError("boom")

    with pytest.raises(ResultCallbackError, match="the on_result callback raised KeyError") as caught:
        await batchchat.arun(src, on_result=on_result, **run_options(sim, concurrency=4))
    assert caught.value.exit_code == ExitCode.OUTPUT == 4
    assert isinstance(caught.value.__cause__, KeyError)
    assert sim.stats()["requests"] < 50  # the run stopped, it did not send the other ~200


async def test_no_retry_is_sent_after_a_rejected_key(tmp_path: Path, simulator: Any) -> None:
    """Three requests answered 500 are in backoff (0.75-1 s) when the fourth is answered 403. Before: the
    workers in backoff sent their retries during the grace period (7 requests); now none is sent."""
    sim = simulator(fault_sequence=("500", "500", "500", "403"), latency_ms=50)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(4))
    summary = await batchchat.arun(src, **run_options(sim, concurrency=4, backoff_base=1.0, backoff_max=1.0,
                                                      max_wait=2.0, grace=5.0))
    assert summary.exit_code == ExitCode.FATAL == 3
    await anyio.sleep(1.2)  # a retry that escaped would arrive by now
    assert sim.stats()["requests"] == 4


def _wait_for_requests(sim: Simulator, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while sim.stats()["requests"] < n:
        assert time.monotonic() < deadline, sim.stats()
        time.sleep(0.02)


def test_no_retry_is_sent_after_a_signal(tmp_path: Path) -> None:
    """Four requests answered 500 wait 1.5-2 s to retry; SIGINT arrives meanwhile. Before: the retries were sent
    during the grace period; now the run ends with exit 130 and 4 requests."""
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(4))
    config = SimulatorConfig(fault_sequence=("500",) * 4, latency_ms=20)
    with Simulator.in_thread(config) as sim, running(
        "run", src, "-o", tmp_path / "out.jsonl", "--base-url", sim.base_url, "--progress", "off",
        "--concurrency", "4", "--backoff-base", "2", "--backoff-max", "2", "--max-wait", "3", "--grace", "10",
        env=cli_env(TEST_KEY),
    ) as proc:
        _wait_for_requests(sim, 4)
        time.sleep(0.3)  # the four 500s are answered: their workers are in backoff
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        time.sleep(0.5)
        assert sim.stats()["requests"] == 4, stderr


def test_a_signal_after_a_rejected_key_keeps_exit_3(tmp_path: Path) -> None:
    """A 403 stops the run (exit 3) while three requests wait to retry; a Ctrl-C then must not turn exit 3 into
    130 (before: it did, and the retries were sent too)."""
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(4))
    config = SimulatorConfig(fault_sequence=("500", "500", "500", "403"), latency_ms=20)
    with Simulator.in_thread(config) as sim, running(
        "run", src, "-o", tmp_path / "out.jsonl", "--base-url", sim.base_url, "--progress", "off",
        "--concurrency", "4", "--backoff-base", "2", "--backoff-max", "2", "--max-wait", "3", "--grace", "10",
        env=cli_env(TEST_KEY),
    ) as proc:
        _wait_for_requests(sim, 4)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 3, stderr
        assert sim.stats()["requests"] == 4, stderr


def test_a_line_with_no_newline_is_never_read_whole(tmp_path: Path) -> None:
    """A 96 MB line without a newline: the reader holds a few copies of the line's first 8 MiB at most. Before
    (`for raw in handle`) the whole line was read into memory, 96 MB and more."""
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as handle:
        handle.write(b'{"prompt": "')
        chunk = b"x" * (1 << 20)
        for _ in range(96):
            handle.write(chunk)
    tracemalloc.start()
    try:
        lines = [(line_no, len(raw)) for line_no, raw in iter_raw_lines(path)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == [(1, MAX_LINE_BYTES + 1)]  # enough for the parser to say it is too long
    assert peak < 5 * MAX_LINE_BYTES, f"{peak / 1e6:.0f} MB held for one line"


def test_too_long_a_line_with_no_newline_exits_2_naming_the_limit(tmp_path: Path, sim: Simulator) -> None:
    path = tmp_path / "huge.jsonl"
    path.write_bytes(b'{"prompt": "' + b"x" * (MAX_LINE_BYTES + 10))
    with pytest.raises(UsageError, match="longer than the 8,388,608 bytes allowed"):
        batchchat.run(path, **run_options(sim, model="gpt-4o-mini"))

