"""Shared helpers: CPU pinning, the simulator, input files, running a pinned client process, the report."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS_DIR = ROOT / "results"
PYTHON = sys.executable
NCPU = os.cpu_count() or 1
SERVER_CPU = 0
CLIENT_CPU = 1 if NCPU > 1 else 0
API_KEY = "sk-bench-0000"
MODEL = "gpt-4o-mini"


# ---- the machine --------------------------------------------------------------------------------------

def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(NCPU),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **{name: version(name) for name in
           ("batchchat", "httpx", "aiohttp", "openai", "uvloop", "orjson", "aiolimiter")},
        "pinning": f"simulator on CPU {SERVER_CPU}, client process on CPU {CLIENT_CPU}",
    }


# ---- inputs -------------------------------------------------------------------------------------------

def client_env() -> dict[str, str]:
    """The environment of a `batchchat` process under benchmark: none of the caller's OPENAI_/BATCHCHAT_
    settings, and the benchmark's key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BATCHCHAT_"))}
    env["OPENAI_API_KEY"] = API_KEY
    return env


def chat_body(i: int, words: int = 6, max_tokens: int = 16) -> dict[str, Any]:
    text = " ".join(["hello"] * (words - 1) + [str(i)])
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}


def write_chat_input(path: Path, n: int, *, words: int = 6, max_tokens: int = 16) -> Path:
    """`n` OpenAI Batch API lines of small chat requests, custom ids r0..r{n-1}."""
    with path.open("wb") as out:
        chunk: list[bytes] = []
        for i in range(n):
            chunk.append(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                       "body": chat_body(i, words, max_tokens)}, option=orjson.OPT_APPEND_NEWLINE))
            if len(chunk) >= 10_000:
                out.write(b"".join(chunk))
                chunk.clear()
        out.write(b"".join(chunk))
    return path


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="batchchat-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def simulator(**config: Any) -> Iterator[Any]:
    """The simulator in its own process, pinned to SERVER_CPU."""
    from batchchat.simulator import Simulator, SimulatorConfig

    sim = Simulator.in_subprocess(SimulatorConfig(**config), cpu=SERVER_CPU)
    try:
        yield sim
    finally:
        sim.close()


# ---- running a pinned child process ---------------------------------------------------------------------

@dataclass
class ProcessRun:
    """A finished child: wall time, exit code, its rusage, RSS samples, and its stdout JSON (if any)."""

    wall: float
    returncode: int
    user: float
    system: float
    maxrss_mb: float
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (t, rss MB, output bytes)
    stdout: str = ""
    stderr: str = ""

    def json(self) -> dict[str, Any]:
        for line in reversed(self.stdout.strip().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"no JSON from the client (rc {self.returncode}): {self.stderr[-3000:]}")


def _pin(cpu: int) -> Any:
    def pin() -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, {cpu})
    return pin


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_process(cmd: list[str], *, timeout: float, cpu: int = CLIENT_CPU, sample: float | None = None,
                watch: Path | None = None, env: dict[str, str] | None = None) -> ProcessRun:
    """Run `cmd` pinned to `cpu`; with `sample` (seconds), record RSS (and `watch`'s size) as it runs."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, preexec_fn=_pin(cpu), cwd=REPO,
                                env={**os.environ, **(env or {})})
        samples: list[tuple[float, float, int]] = []
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if sample else 0)
            if pid:
                break
            now = time.perf_counter()
            if now > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise TimeoutError(f"{cmd[:4]} took longer than {timeout:.0f} s")
            rss = _rss_mb(proc.pid)
            if rss is not None:
                size = watch.stat().st_size if watch is not None and watch.exists() else 0
                samples.append((now - start, rss, size))
            time.sleep(sample or 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ProcessRun(wall, proc.returncode, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024,
                          samples, out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def run_client(spec: dict[str, Any], *, timeout: float, sample: float | None = None,
               watch: Path | None = None) -> dict[str, Any]:
    """Run one client loop of `benchmarks.alternatives` in its own pinned process; its JSON report + rusage."""
    run = run_process([PYTHON, "-m", "benchmarks.alternatives", json.dumps(spec)], timeout=timeout,
                      sample=sample, watch=watch)
    result = run.json()
    result["process"] = run
    return result


# ---- the report -----------------------------------------------------------------------------------------

def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


@dataclass
class Section:
    """One benchmark's part of RESULTS.md: a title, markdown body, and goals (text, value, met)."""

    title: str
    body: str
    goals: list[tuple[str, str, bool]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        parts = [f"## {self.title}", "", self.body.strip(), ""]
        if self.goals:
            parts += [table(["goal", "measured", "verdict"], [[g, v, verdict(ok)] for g, v, ok in self.goals]), ""]
        return "\n".join(parts)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
