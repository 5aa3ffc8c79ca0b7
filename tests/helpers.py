"""Helpers shared by the tests: job files, output reading, run options against a simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from batchchat.simulator import Simulator

TEST_KEY = "sk-test-0123456789abcdef"


def write_jobs(path: Path, lines: list[Any]) -> Path:
    """Write `lines` (dicts become JSON, bytes/str are written as they are) one per line."""
    with path.open("wb") as handle:
        for line in lines:
            if isinstance(line, bytes):
                handle.write(line + b"\n")
            elif isinstance(line, str):
                handle.write(line.encode() + b"\n")
            else:
                handle.write(orjson.dumps(line) + b"\n")
    return path


def chat_lines(n: int, prefix: str = "r", max_tokens: int = 16) -> list[dict[str, Any]]:
    """`n` small chat requests with ids prefix0..prefixN-1."""
    return [
        {"custom_id": f"{prefix}{i}", "model": "gpt-4o-mini", "max_tokens": max_tokens,
         "messages": [{"role": "user", "content": f"Say something about the number {i}."}]}
        for i in range(n)
    ]


def read_output(path: Path) -> list[dict[str, Any]]:
    """Every line of an output file, parsed (each must be whole JSON)."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def run_options(sim: Simulator, **extra: Any) -> dict[str, Any]:
    """Options for `batchchat.run` that point at `sim`, with fast retries and no progress output."""
    options = {"base_url": sim.base_url, "api_key": TEST_KEY, "progress": "off", "backoff_base": 0.01,
               "backoff_max": 0.05, "max_wait": 0.2}
    options.update(extra)
    return options
