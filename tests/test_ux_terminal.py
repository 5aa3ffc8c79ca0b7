"""The terminal (#15 items 8, 9): the bar at 80 columns keeps what matters; `--help` shows every default and
boolean flags as flags; `--version`."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

from helpers import chat_lines, write_jobs

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import FAST_RETRIES, cli, cli_args, cli_env

from batchchat.report.counters import Counters
from batchchat.report.progress import status_line
from batchchat.simulator import Simulator

COLOUR = re.compile(r"\x1b\[[0-9;]*m")
MOVE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")  # cursor moves and erases: a new screen line


def _counters() -> Counters:
    counters = Counters(total=100_000, skipped=0, succeeded=12_345, failed=1_234, retries=77, rate_limited=9)
    counters.in_flight = 64
    return counters


def test_the_status_line_keeps_what_matters_when_narrow() -> None:
    rates = (1234.5, 2_000_000.0)
    full = status_line(_counters(), rates)
    assert "retries" in full and "x 429" in full and "tok/min" in full
    for width in (80, 60):
        line = status_line(_counters(), rates, width)
        for part in ("13,579/100,000", "1,234 failed", "1,234.5 req/s", "ETA "):
            assert part in line, (width, line)
        assert len(line) <= width


def test_the_bar_at_80_columns_shows_done_failed_rate_and_eta(tmp_path: Path,
                                                              simulator: Callable[..., Simulator]) -> None:
    sim = simulator(latency_ms=60, fault_rates={"500": 0.2})
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(60))
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = cli_env()
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    env["TERM"] = "xterm"
    proc = subprocess.Popen(cli_args("run", src, "-o", tmp_path / "out.jsonl", "--base-url", sim.base_url,
                                     "--progress", "bar", "--concurrency", "4", "--max-attempts", "1",
                                     *FAST_RETRIES), env=env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the pty closed: the process ended
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=30)
    os.close(master)
    text = MOVE.sub("\n", COLOUR.sub("", seen.decode("utf-8", "replace")))
    bars = [line for line in text.splitlines() if line.startswith("batchchat ") and "/60" in line]
    assert bars, text
    last = bars[-1]
    assert len(last) <= 80, last
    assert re.search(r"60/60 (done )?\(100%\)", last), last
    for part in ("failed", "req/s", "ETA"):
        assert part in last, last


def _help(*args: str) -> str:
    proc = cli(*args, "--help", env=cli_env(COLUMNS="250"))
    assert proc.returncode == 0, proc.stderr
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", proc.stdout))


def test_help_shows_every_default_in_one_style() -> None:
    text = _help("run")
    for option, default in (("--rpm", "no limit"), ("--tpm", "no limit"), ("--concurrency", "64"),
                            ("--base-url", "$OPENAI_BASE_URL, else https://api.openai.com/v1"),
                            ("--api-key-env", "OPENAI_API_KEY"), ("--transport", "aiohttp"), ("--adapt", "auto"),
                            ("--progress", "auto"), ("--sim-rpm", "none"), ("--sim-latency-ms", "20.0")):
        assert re.search(re.escape(option) + r" .*?\[default: " + re.escape(default) + r"\]", text), option
    assert not re.search(r"\[\d", text)  # no old-style "[600]" left over
    assert "<bool>" not in text
    assert re.search(r"--strict Refuse", text) and re.search(r"--simulate Run against", text)
    assert "\\[" not in text


def test_version() -> None:
    proc = cli("--version")
    assert proc.returncode == 0 and re.fullmatch(r"batchchat \d+\.\d+\.\d+\S*\n", proc.stdout), proc.stdout
