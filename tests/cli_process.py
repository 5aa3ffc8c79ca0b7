"""Run the real `batchchat` CLI as a separate process, the way a user or cron would."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from helpers import write_jobs as write_jsonl  # noqa: F401  (re-exported for the survival tests)

PLANTED_KEY = "sk-survival-PLANTED-7f3a9c1e5b2d4680"
FAST_RETRIES = ("--backoff-base", "0.01", "--backoff-max", "0.05", "--max-wait", "0.2")


def cli_env(key: str | None = PLANTED_KEY, var: str = "OPENAI_API_KEY", **extra: str) -> dict[str, str]:
    """The environment of a CLI run: the key in `var`, no stray endpoint settings, no colours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.pop("BATCHCHAT_CONFIG", None)
    if key is not None:
        env[var] = key
    env["NO_COLOR"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli_args(*args: str | Path) -> list[str]:
    """The argv of `python -m batchchat ARGS...`."""
    return [sys.executable, "-m", "batchchat", *(str(a) for a in args)]


def run_args(base_url: str, input_path: Path | str, output: Path | str, *extra: str | Path,
             progress: str = "off") -> list[str | Path]:
    """The usual `run` arguments against a simulator, with fast retries."""
    return ["run", input_path, "-o", output, "--base-url", base_url, "--progress", progress, *FAST_RETRIES, *extra]


def cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 60.0,
        cwd: Path | None = None, **popen: Any) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion; text stdout/stderr captured. Raises on timeout (a hang is a failure)."""
    return subprocess.run(cli_args(*args), env=env if env is not None else cli_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, **popen)


def start(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
          **popen: Any) -> subprocess.Popen[bytes]:
    """Start the CLI in the background; stdout and stderr are pipes (bytes)."""
    return subprocess.Popen(cli_args(*args), env=env if env is not None else cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=cwd, **popen)


@contextlib.contextmanager
def running(*args: str | Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """`start` the CLI; whatever happens in the block, it does not outlive it."""
    proc = start(*args, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, str, str]:
    """Wait for a started CLI to end: its exit code, stdout and stderr, which must hold no traceback."""
    stdout, stderr = proc.communicate(timeout=timeout)
    out, err = stdout.decode(), stderr.decode()
    assert "Traceback" not in err, err
    return proc.returncode, out, err


def count_lines(path: Path) -> int:
    """Complete lines in a file (0 if it does not exist)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> int:
    """Wait until `path` has at least `n` complete lines (or the process ended); returns the count."""
    deadline = time.monotonic() + timeout
    count = count_lines(path)
    while count < n and time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.005)
        count = count_lines(path)
    return count


def parse_output(path: Path) -> list[dict[str, Any]]:
    """Every line of an output, each of which must be whole JSON ending in a newline."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the output ends in a torn line"
    return [orjson.loads(line) for line in data.splitlines()]


def chat_jobs(n: int, prefix: str = "r", max_tokens: int = 8) -> list[dict[str, Any]]:
    """`n` small chat requests with ids prefix0..prefix{n-1}."""
    return [{"custom_id": f"{prefix}{i}", "model": "gpt-4o-mini", "max_tokens": max_tokens,
             "messages": [{"role": "user", "content": f"Tell me about {i}."}]} for i in range(n)]
