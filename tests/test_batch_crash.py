"""Crash safety of `--via batch`: whatever moment the run dies at, the same command finishes the job without
uploading a chunk twice or creating a second batch for the same lines, and every id is in the output once.

In-process crashes stop the run at the n-th write of the state file (the boundaries between every step that
buys something: before an upload, after it, before a creation, after it, around each collect); subprocess
runs are SIGKILLed at seeded moments; lost replies (the provider did the work, the answer never came) are
staged by the simulator's faults.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from batch_support import assert_each_id_once, assert_nothing_bought_twice, batch_options, start_batch_sim
from cli_process import cli_env, running, start
from helpers import TEST_KEY, chat_lines, write_jobs

import batchchat
from batchchat.api import settings_for
from batchchat.batch.runner import BatchRun
from batchchat.batch.state import BatchState
from batchchat.simulator import Simulator


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs (no cleanup the code could count on)."""


def _crash_at(monkeypatch: pytest.MonkeyPatch, n: int, seen: list[str]) -> None:
    real = BatchState.save

    def save(self: BatchState) -> None:
        seen.append(",".join(c.phase for c in self.chunks))
        if len(seen) == n:
            raise Crash(f"crash before state write {n}")
        real(self)

    monkeypatch.setattr(BatchState, "save", save)


def test_lost_replies_to_an_upload_and_a_creation_are_looked_up_not_repeated(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, upload_faults=("ok", "lost", "500"), create_faults=("lost", "ok", "drop"))
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(90))
    out = tmp_path / "out.jsonl"
    summary = batchchat.run(job, out, **batch_options(sim, batch_max_requests=30))
    assert summary.exit_code == 0 and summary.succeeded == 90
    assert_each_id_once(out, [f"r{i}" for i in range(90)])
    stats = assert_nothing_bought_twice(sim)
    assert stats["files_uploaded"] == 3 and stats["batches_created"] == 3
    assert stats["upload_faults"] == 1 and stats["create_faults"] == 1


# The state writes of a 3-file run, in order (the phase of each file at that write):
# 1 ready,ready,ready (the split)  2 uploading  3 uploaded  4 creating  5 submitted  6-9 the same for file 2
# 10 collecting,submitted,ready  11 done,...  12-15 file 3 submitted  16 collecting file 2  17 done
# 18 collecting file 3  19 all done. A crash "at n" dies just before write n reaches the disk.
FAST_MOMENTS = {2, 3, 4, 5, 10, 11, 18, 19}


@pytest.mark.parametrize("n", [n if n in FAST_MOMENTS else pytest.param(n, marks=pytest.mark.slow)
                               for n in range(2, 20)])
def test_a_crash_before_any_state_write_then_the_same_command_buys_nothing_twice(
        tmp_path: Path, simulator: Callable[..., Simulator], monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    sim = start_batch_sim(simulator)
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(60))
    out = tmp_path / "out.jsonl"
    seen: list[str] = []
    with monkeypatch.context() as patch:
        _crash_at(patch, n, seen)
        with pytest.raises((Crash, BaseExceptionGroup)) as crashed:
            batchchat.run(job, out, **batch_options(sim, batch_max_requests=20))
        assert seen[-1] is not None
        assert crashed.group_contains(Crash) if isinstance(crashed.value, BaseExceptionGroup) \
            else isinstance(crashed.value, Crash), crashed.value
    summary = batchchat.run(job, out, **batch_options(sim, batch_max_requests=20))
    assert summary.exit_code == 0, summary.stopped
    assert_each_id_once(out, [f"r{i}" for i in range(60)])
    stats = assert_nothing_bought_twice(sim)
    assert stats["files_uploaded"] == 3 and stats["batches_created"] == 3


def test_the_state_lacks_an_uploaded_file_and_a_created_batch_then_both_are_found(
        tmp_path: Path, simulator: Callable[..., Simulator], monkeypatch: pytest.MonkeyPatch) -> None:
    sim = start_batch_sim(simulator, validate_seconds=1.0)
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(40))
    out = tmp_path / "out.jsonl"
    # write 1: the split; 2: "uploading"; 3: "uploaded" <- the provider has the file, the state will not
    seen: list[str] = []
    with monkeypatch.context() as patch:
        _crash_at(patch, 3, seen)
        with pytest.raises((Crash, BaseExceptionGroup)):
            batchchat.run(job, out, **batch_options(sim, batch_max_requests=20))
    assert seen[-1] == "uploaded,ready"
    state = orjson.loads((tmp_path / "out.jsonl.batch.json").read_bytes())
    assert state["chunks"][0]["phase"] == "uploading" and state["chunks"][0]["file_id"] is None
    assert sim.stats()["batch"]["files_uploaded"] == 1
    messages: list[str] = []
    # the rerun crashes too, right after creating the first batch: "creating" on disk, the batch at the provider
    seen.clear()
    with monkeypatch.context() as patch:
        _crash_at(patch, 3, seen)  # 1: the upload found again; 2: "creating"; 3: "submitted" <- crash
        with pytest.raises((Crash, BaseExceptionGroup)):
            settings = settings_for(job, out, **batch_options(sim, batch_max_requests=20))
            anyio.run(lambda: BatchRun(settings, echo=messages.append).run())
    assert any("found the upload of batch file 1" in m for m in messages), messages
    state = orjson.loads((tmp_path / "out.jsonl.batch.json").read_bytes())
    assert state["chunks"][0]["phase"] == "creating" and state["chunks"][0]["batch_id"] is None
    assert sim.stats()["batch"]["batches_created"] == 1
    messages.clear()
    settings = settings_for(job, out, **batch_options(sim, batch_max_requests=20))
    summary = anyio.run(lambda: BatchRun(settings, echo=messages.append).run())
    assert summary.exit_code == 0
    assert any("found batch" in m and "batch file 1" in m for m in messages), messages
    assert_each_id_once(out, [f"r{i}" for i in range(40)])
    stats = assert_nothing_bought_twice(sim)
    assert stats["files_uploaded"] == 2 and stats["batches_created"] == 2


def _stage(state_file: Path) -> str:
    """Where a killed run was: split (no state yet), submit, poll or collect."""
    if not state_file.exists():
        return "split"
    phases = [c["phase"] for c in orjson.loads(state_file.read_bytes())["chunks"]]
    if any(p in ("collecting", "done") for p in phases):
        return "collect"
    if any(p in ("ready", "uploading", "uploaded", "creating") for p in phases):
        return "submit"
    return "poll"


def _kill_and_rerun(tmp_path: Path, sim: Simulator, n: int, moments: list[float]) -> tuple[dict[str, Any], list[str]]:
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(n))
    out = tmp_path / "out.jsonl"
    args = ["run", job, "-o", out, "--base-url", sim.base_url, "--via", "batch", "--progress", "off",
            "--batch-max-requests", str(max(1, n // 4)), "--poll-interval", "0.05", "--backoff-base", "0.01"]
    env = cli_env(TEST_KEY)
    stages = []
    for delay in moments:
        with running(*args, env=env) as proc:
            time.sleep(delay)
            proc.kill()  # SIGKILL
            proc.wait(timeout=30)
        stages.append(_stage(tmp_path / "out.jsonl.batch.json"))
    proc = start(*args, env=env)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert_each_id_once(out, [f"r{i}" for i in range(n)])
    return assert_nothing_bought_twice(sim), stages


def test_sigkill_at_a_few_moments_across_submit_poll_and_collect(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, validate_seconds=0.3, lines_per_second=400.0, finalize_seconds=0.3)
    stats, stages = _kill_and_rerun(tmp_path, sim, 800, [0.9, 1.2, 1.5, 2.5])
    assert stats["batches_created"] == 4 and stats["files_uploaded"] == 4
    assert len(set(stages)) >= 2, stages


@pytest.mark.slow
def test_sigkill_at_twenty_seeded_moments(tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, validate_seconds=0.3, lines_per_second=25.0, finalize_seconds=0.3)
    rng = random.Random(20)
    moments = [rng.uniform(0.6, 1.6) for _ in range(20)]
    stats, stages = _kill_and_rerun(tmp_path, sim, 2000, moments)
    assert stats["batches_created"] == 4 and stats["files_uploaded"] == 4
    assert {"submit", "poll", "collect"} <= set(stages), stages
    print("stages at the kills:", stages)


def test_ctrl_c_stops_polling_exits_130_and_leaves_the_batches_running(
        tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = start_batch_sim(simulator, validate_seconds=0.2, lines_per_second=50.0)
    job = write_jobs(tmp_path / "job.jsonl", chat_lines(100))
    out = tmp_path / "out.jsonl"
    args = ["run", job, "-o", out, "--base-url", sim.base_url, "--via", "batch", "--progress", "off",
            "--poll-interval", "0.05"]
    proc = start(*args, env=cli_env(TEST_KEY))
    deadline = time.monotonic() + 30
    while sim.stats()["batch"]["batches_created"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    assert "keep running" in err.decode() and "batchchat cancel" in err.decode()
    assert sim.stats()["batch"]["cancels"] == 0
    assert (tmp_path / "out.jsonl.batch.json").exists()
    summary = batchchat.run(job, out, **batch_options(sim))
    assert summary.exit_code == 0
    assert_each_id_once(out, [f"r{i}" for i in range(100)])
    assert_nothing_bought_twice(sim)
