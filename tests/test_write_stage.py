"""The write stage writes on a thread of its own and gathers results into batches (`online.write_stage`): what
that must never change is that a result counts (and frees its concurrency slot) only once its line is on disk,
that every result handed over is written exactly once even when the buffer is full, and that a failed write
stops the stage with the error. A real `ResultWriter` on a real file; the seam is a writer that can be slowed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchchat.errors import OutputWriteError
from batchchat.online.write_stage import WriteStage, hand_over
from batchchat.output.lines import Result
from batchchat.output.writer import ResultWriter
from batchchat.report.counters import Counters


class SlowWriter(ResultWriter):
    """A `ResultWriter` whose writes take `delays` seconds in turn (and the `fail_at`-th one fails)."""

    def __init__(self, path: Path, delays: list[float], fail_at: int | None = None) -> None:
        super().__init__(path)
        self.delays = delays
        self.fail_at = fail_at
        self.writes = 0
        self.lock = threading.Lock()

    def write(self, data: bytes, now: float) -> None:
        with self.lock:
            self.writes += 1
            if self.fail_at is not None and self.writes >= self.fail_at:
                raise OutputWriteError(f"cannot write {self.path}: the disk is full")
        time.sleep(self.delays[self.writes % len(self.delays)])
        super().write(data, now)


def lines_on_disk(path: Path) -> list[str]:
    return [orjson.loads(line)["custom_id"] for line in path.read_bytes().splitlines()]


def run_stage(path: Path, n: int, delays: list[float], buffer: int, in_flight: int,
              fail_at: int | None = None) -> tuple[int, list[str], BaseException | None, list[bool]]:
    """Hand `n` results over from `in_flight` concurrent tasks; returns how many counted, the ids on disk, the
    stage's error, and whether each hand-over was taken."""
    writer = SlowWriter(path, delays, fail_at)
    writer.open()
    counters = Counters()
    counted = [0]
    taken: list[bool] = []
    early: list[int] = []

    def release() -> None:  # called as each result counts: it, and all that counted before, are on disk
        counted[0] += 1
        if counted[0] > len(lines_on_disk(path)):
            early.append(counted[0])  # a result counted before its line was written

    error: list[BaseException] = []

    async def main() -> None:
        stage = WriteStage(writer, counters, release, buffer=buffer)
        ids = iter(range(n))

        async def worker() -> None:
            for i in ids:
                counters.in_flight += 1
                result = Result(f"r{i}", i + 1, 200, b'{"usage": {"prompt_tokens": 1}}', holds_slot=True)
                taken.append(await hand_over(stage, result))
                await anyio.sleep(0)

        async def write() -> None:
            try:
                await stage.run()
            except OutputWriteError as exc:
                error.append(exc)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                try:
                    async with anyio.create_task_group() as workers:
                        for _ in range(in_flight):
                            workers.start_soon(worker)
                finally:
                    stage.close()

    anyio.run(main)
    writer.close()
    assert not early, f"results {early[:5]} counted before their lines were on disk"
    assert counters.succeeded == counted[0]
    return counted[0], lines_on_disk(path), error[0] if error else None, taken


@settings(deadline=None, max_examples=40)
@given(n=st.integers(1, 80), delays=st.lists(st.sampled_from([0.0, 0.0005, 0.003]), min_size=1, max_size=5),
       buffer=st.integers(1, 16), in_flight=st.integers(1, 12))
def test_a_result_counts_only_once_on_disk_and_each_is_written_once(
    tmp_path_factory: pytest.TempPathFactory, n: int, delays: list[float], buffer: int, in_flight: int
) -> None:
    path = tmp_path_factory.mktemp("ws") / "out.jsonl"
    counted, on_disk, error, taken = run_stage(path, n, delays, buffer, in_flight)
    assert error is None and all(taken)
    assert sorted(on_disk) == sorted(f"r{i}" for i in range(n))  # each exactly once, none lost to a full buffer
    assert counted == n


def test_a_failed_write_stops_the_stage_and_refuses_what_follows(tmp_path: Path) -> None:
    counted, on_disk, error, taken = run_stage(tmp_path / "out.jsonl", 200, [0.001], 8, 4, fail_at=3)
    assert isinstance(error, OutputWriteError) and "the disk is full" in str(error)
    assert counted <= len(on_disk) < 200  # what counted was written; the write that failed wrote nothing
    assert not all(taken)  # later hand-overs were refused (their slots go back with the workers)
