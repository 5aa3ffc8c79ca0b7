"""4. Memory: a large input through the whole pipeline (zero-latency simulator, no limits).

The client's RSS is sampled from /proc/PID/status every 100 ms with the output's size; progress = output
bytes / final output bytes, so "RSS at 10%" is the first sample at or past 10% of the output written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks.common import Section, log, run_client, simulator, table, write_chat_input


def run(quick: bool, work: Path) -> Section:
    n = 30_000 if quick else int(os.environ.get("BENCH_MEMORY_LINES", 1_000_000))
    inp = write_chat_input(work / "mem.jsonl", n)
    out = work / "mem.out"
    with simulator(seed=5) as sim:
        log(f"memory: {n:,} lines through the pipeline")
        r = run_client({"client": "batchchat", "input": str(inp), "output": str(out), "base_url": sim.base_url,
                        "concurrency": 64, "rpm": 100_000_000, "tpm": 100_000_000_000},
                       timeout=1200, sample=0.1, watch=out)
    samples = r.pop("process").samples
    final = out.stat().st_size
    at: dict[str, float] = {}
    for label, frac in (("10%", 0.1), ("50%", 0.5)):
        hit = [rss for _, rss, size in samples if size >= frac * final]
        at[label] = hit[0] if hit else float("nan")
    at["100%"] = samples[-1][1] if samples else float("nan")  # the last sample before the process ended
    before = [rss for _, rss, size in samples if size == 0]
    at["after pre-scan"] = before[-1] if before else float("nan")
    peak = r["maxrss_mb"]
    rows = [[n, r["ok"], r["failed"], r["elapsed"], r["ok"] / r["elapsed"], at["after pre-scan"], at["10%"],
             at["50%"], at["100%"], peak]]
    body = (f"{n:,} input lines ({inp.stat().st_size / 1e6:,.0f} MB), {final / 1e6:,.0f} MB of output.\n\n"
            + table(["lines", "ok", "failed", "wall s", "req/s", "RSS MB after pre-scan", "RSS MB @10%", "@50%",
                     "@100%", "peak RSS MB"], rows)
            + "\n\nCommand: `python -m benchmarks.run_all --only memory`.")
    flat = at["100%"] - at["10%"]
    goals = [
        (f"peak RSS < 150 MB for {n:,} lines", f"{peak:.0f} MB", peak < 150),
        ("flat after 10% (grows < 10 MB from 10% to 100%)", f"{flat:+.1f} MB", flat < 10),
    ]
    data: dict[str, Any] = {**r, "rss_at": at, "samples": samples[:: max(1, len(samples) // 400)]}
    return Section("4. Memory", body, goals, data)
