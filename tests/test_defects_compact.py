"""Compaction (#10): keeps the output's file mode, syncs the directory after the rename, removes
`OUTPUT.compact` on a full disk or any OSError (the output left whole), ends an OSError as `OutputWriteError`
(exit 4, with the summary), and an interrupt during it neither claims that nothing was sent nor loses the
summary."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_process import FAST_RETRIES, cli_env
from helpers import TEST_KEY, chat_lines, read_output, run_options, write_jobs

import batchchat
from batchchat.errors import OutputWriteError
from batchchat.output import compact as compact_module
from batchchat.output.compact import compact
from batchchat.output.lines import Result, encode_result
from batchchat.simulator import Simulator


def failed_line(custom_id: str) -> bytes:
    return encode_result(Result(custom_id, 1, 500, b'{"error": {"message": "boom"}}', error_code="http_500",
                                error_message="gave up"), "batch_req_" + custom_id)


def ok_line(custom_id: str) -> bytes:
    return encode_result(Result(custom_id, 1, 200, b'{"usage": {"prompt_tokens": 1}}', attempts=1), "x" + custom_id)


def needs_compaction(out: Path) -> bytes:
    data = failed_line("a") + ok_line("b") + failed_line("c") + ok_line("a") + ok_line("c")
    out.write_bytes(data)
    return data


def test_compaction_keeps_the_file_mode(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    needs_compaction(out)
    out.chmod(0o600)  # private answers stay private (before: recreated 0o644 by the umask)
    assert compact(out, {"a", "c"}) == 2
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    out.chmod(0o664)
    out.write_bytes(out.read_bytes() + ok_line("b"))
    assert compact(out, {"b"}) == 1
    assert stat.S_IMODE(out.stat().st_mode) == 0o664


def test_compaction_syncs_the_directory_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.jsonl"
    needs_compaction(out)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(compact_module.os, "fsync", fsync)
    monkeypatch.setattr(compact_module.os, "replace", replace)
    compact(out, {"a", "c"})
    assert events == ["fsync file", "rename", "fsync dir"]


def test_a_failing_write_leaves_no_compact_file_and_the_output_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    data = needs_compaction(out)

    def replace(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(compact_module.os, "replace", replace)
    with pytest.raises(OutputWriteError, match=r"cannot compact .*Input/output error"):
        compact(out, {"a", "c"})
    assert out.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_full_disk_leaves_no_compact_file_and_the_output_whole(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    data = needs_compaction(out)
    # A file-size limit makes write() fail like a full disk (Python ignores SIGXFSZ); below the compacted size.
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from batchchat.output.compact import compact\n"
        "from batchchat.errors import OutputWriteError\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({len(data) // 3}, {len(data) // 3}))\n"
        "try:\n    compact(Path(sys.argv[1]), {'a', 'c'})\nexcept OutputWriteError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=30)
    assert "the disk is full" in done.stdout, done.stderr
    assert out.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


async def test_an_oserror_in_compaction_ends_as_exit_4_with_a_summary(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(3))
    out = tmp_path / "in.results.jsonl"
    out.write_bytes(failed_line("r0") + failed_line("r2"))

    def replace(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(compact_module.os, "replace", replace)
    summary = await batchchat.arun(src, **run_options(sim))
    assert summary.exit_code == 4 and summary.succeeded == 3
    assert "cannot compact" in (summary.stopped or "") and "the disk is full" in (summary.stopped or "")
    lines = read_output(out)  # the old error lines and the new answers: whole, and a rerun resumes
    assert len(lines) == 5 and not (tmp_path / "in.results.jsonl.compact").exists()
    monkeypatch.undo()
    again = await batchchat.arun(src, **run_options(sim))
    assert again.exit_code == 0 and again.total == 0 and sim.stats()["requests"] == 3


SLOW_COMPACTION = """
import sys, time
import batchchat.online.prepare as engine
real = engine.compact
def slow(*args):
    print("COMPACTING", file=sys.stderr, flush=True)
    time.sleep(1.5)
    return real(*args)
engine.compact = slow
from batchchat.cli.commands import app
app(sys.argv[1:], prog_name="batchchat")
"""


def test_an_interrupt_during_compaction_keeps_the_summary(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(4))
    out = tmp_path / "out.jsonl"
    out.write_bytes(failed_line("r1") + failed_line("r3"))
    args = ["run", str(src), "-o", str(out), "--base-url", sim.base_url, "--progress", "off", *FAST_RETRIES]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_COMPACTION, *args], env=cli_env(TEST_KEY),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            if "COMPACTING" in line or not line:
                break
        assert "COMPACTING" in seen[-1], seen
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = "".join(seen) + stderr
    assert "nothing was sent" not in stderr, stderr
    assert "being compacted" in stderr
    assert "4 this run: 4 succeeded" in stdout and "exit code  0" in stdout, (stdout, stderr)
    assert proc.returncode == 0
    assert sorted(line["custom_id"] for line in read_output(out)) == ["r0", "r1", "r2", "r3"]  # compacted
