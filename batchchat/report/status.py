"""The state file a run keeps beside its output (`OUTPUT.status.json`), and `batchchat status OUTPUT`.

The run rewrites the file atomically (a temporary file renamed over) every couple of seconds and once at the
end, so another terminal (or a cron check) can see how far the whole job is: done before this run plus done
in it, out of the whole job. Without a state file the output itself is counted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Any

import anyio
import orjson

from batchchat.report.counters import Counters

SUFFIX = ".status.json"


def status_path(output: Path) -> Path:
    """Where the state file of `output` lives."""
    return output.with_name(output.name + SUFFIX)


class StatusFile:
    """Keeps `OUTPUT.status.json` current during a run."""

    def __init__(self, output: Path, counters: Counters, input_name: str, endpoint: str,
                 clock: Any = time.time) -> None:
        self.path = status_path(output)
        self._output = output
        self._counters = counters
        self._input = input_name
        self._endpoint = endpoint
        self._clock = clock
        self._started = clock()

    def snapshot(self, state: str, exit_code: int | None = None) -> dict[str, Any]:
        """The figures of the whole job now (this run's plus those an earlier run finished)."""
        c = self._counters
        return {
            "state": state, "pid": os.getpid(), "input": self._input, "output": str(self._output),
            "endpoint": self._endpoint, "started": round(self._started, 3), "updated": round(self._clock(), 3),
            "job_total": c.skipped + c.total, "job_done": c.skipped + c.done, "done_before": c.skipped,
            "this_run_total": c.total, "succeeded": c.succeeded, "failed": c.failed, "in_flight": c.in_flight,
            "exit_code": exit_code,
        }

    def write(self, state: str = "running", exit_code: int | None = None, seal: dict[str, Any] | None = None) -> None:
        """Replace the state file with the figures of now (and a finished job's seal, `output.seal`); a failure
        to write it is not the run's failure."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        snapshot = self.snapshot(state, exit_code)
        if seal is not None:
            snapshot["seal"] = seal
        with contextlib.suppress(OSError):
            tmp.write_bytes(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2))
            os.replace(tmp, self.path)

    async def run(self, interval: float = 2.0) -> None:
        """Rewrite the file every `interval` seconds until cancelled."""
        while True:
            self.write()
            await anyio.sleep(interval)


def read_seal(output: Path) -> Any:
    """The seal the state file of `output` holds when its run finished (None: none)."""
    try:
        data = orjson.loads(status_path(output).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data.get("seal") if isinstance(data, dict) and data.get("state") == "finished" else None


def lock_holder(output: Path) -> int | None:
    """The pid of the run holding `output`'s lock, or None when no run holds it."""
    lock = output.with_name(output.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None  # no lock file: no run (a run removes its lock file when it ends)
    try:
        st = os.fstat(fd)
        held = _held_per_proc_locks(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
        if held is None:  # no /proc/locks: probe with a shared lock, dropped at once
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                held = True
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                held = False
        if not held:
            return None
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0
    finally:
        os.close(fd)


def _held_per_proc_locks(file_id: str) -> bool | None:
    """Whether Linux's lock table shows a flock on the file `MAJOR:MINOR:INODE` (None: no table to read).
    Reading it takes no lock, so a run starting at that moment is never refused because of a status check."""
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()
        if "FLOCK" in fields and file_id in fields:
            return True
    return False


def count_output(output: Path) -> tuple[int, int]:
    """Succeeded and failed lines of an output, read only (a torn last line is not counted)."""
    ok = failed = 0
    with output.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            if b'"error":null' in raw[:400]:
                ok += 1
            else:
                failed += 1
    return ok, failed


def describe_status(output: Path, now: float | None = None) -> tuple[str, bool]:
    """`batchchat status OUTPUT` as text, and whether anything was found."""
    now = time.time() if now is None else now
    holder = lock_holder(output)
    running = f"running (pid {holder} holds the lock)" if holder else "no run holds the lock"
    path = status_path(output)
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        data = None
    if isinstance(data, dict):
        total, done = data.get("job_total", 0), data.get("job_done", 0)
        pct = 100.0 * done / total if total else 100.0
        state = data.get("state", "?")
        if state == "running" and not holder:
            state = "not running (the run that wrote this ended without a word: killed?)"
        elif state != "running":
            state += f", exit code {data.get('exit_code')}"
        age = max(0.0, now - float(data.get("updated", now)))
        lines = [
            f"{output}: {running}",
            f"  job      {done:,}/{total:,} done ({pct:.0f}%), {data.get('failed', 0):,} failed this run, "
            f"{data.get('done_before', 0):,} done before this run",
            f"  state    {state} (updated {age:,.0f} s ago)",
            f"  input    {data.get('input')}",
            f"  endpoint {data.get('endpoint')}",
        ]
        return "\n".join(lines), True
    if output.is_file():
        ok, failed = count_output(output)
        return (f"{output}: {running}\n  output   {ok + failed:,} lines: {ok:,} succeeded, {failed:,} failed "
                f"(no state file {path.name}: the total is not known)"), True
    return f"{output}: no such output and no state file {path.name}", False
