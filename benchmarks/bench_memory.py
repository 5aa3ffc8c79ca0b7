"""4. Memory: a large input through the whole pipeline (zero-latency simulator, no limits).

The client's RSS is sampled from /proc/PID/status every 100 ms with the output's size; progress = output
bytes / final output bytes, so "RSS at 10%" is the first sample at or past 10% of the output written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, Section, log, run_client, run_process, simulator, table, write_chat_input

# The whole pipeline moves ~5,000-6,000 req/s here, so a million lines take about 3 minutes, inside the 15 of
# `make bench`; BENCH_MEMORY_LINES sets another size. The pre-scan, the stage whose memory grows with the input,
# is also measured alone on a million lines.
DEFAULT_LINES = 1_000_000
SCAN_LINES = 1_000_000
SCAN_CODE = """
import resource, sys, time
from pathlib import Path
from batchchat.api import settings_for
from batchchat.input.plan import scan
p = Path(sys.argv[1])
s = settings_for(str(p), str(p) + ".out", base_url="http://127.0.0.1:9/v1")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
plan = scan(p, "in", s)
print(time.perf_counter() - t, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, plan.to_run)
"""


def scan_only(work: Path, n: int) -> tuple[float, float, float]:
    """(seconds, RSS MB before, peak RSS MB) of the pre-scan alone on an `n`-line input, in a pinned process."""
    inp = write_chat_input(work / "scan.jsonl", n)
    p = run_process([PYTHON, "-c", SCAN_CODE, str(inp)], timeout=300)
    seconds, before, peak, to_run = p.stdout.split()
    assert int(to_run) == n, p.stderr
    inp.unlink()
    return float(seconds), float(before), float(peak)


def run(quick: bool, work: Path) -> Section:
    n = 30_000 if quick else int(os.environ.get("BENCH_MEMORY_LINES", DEFAULT_LINES))
    scan_n = 100_000 if quick else SCAN_LINES
    log(f"memory: pre-scan alone, {scan_n:,} lines")
    scan_s, scan_before, scan_peak = scan_only(work, scan_n)
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
            + f"\n\nThe pre-scan alone (the only stage whose memory grows with the input) on {scan_n:,} lines: "
            f"{scan_s:.1f} s, RSS {scan_before:.0f} MB before (imports), peak {scan_peak:.0f} MB."
            + ("" if quick or n >= 1_000_000 else f"\n\nThe pipeline run is capped at {n:,} lines to keep `make bench` "
               "under 15 minutes; `BENCH_MEMORY_LINES=1000000` runs the full million.")
            + "\n\nCommand: `python -m benchmarks.run_all --only memory`.")
    flat = at["100%"] - at["10%"]
    goals = [
        (f"peak RSS < 150 MB ({n:,} lines through the pipeline)", f"{peak:.0f} MB", peak < 150),
        (f"pre-scan of {scan_n:,} lines: peak RSS < 150 MB", f"{scan_peak:.0f} MB", scan_peak < 150),
        ("flat after 10% (grows < 10 MB from 10% to 100%)", f"{flat:+.1f} MB", flat < 10),
    ]
    data: dict[str, Any] = {**r, "rss_at": at, "scan": [scan_n, scan_s, scan_before, scan_peak],
                            "samples": samples[:: max(1, len(samples) // 400)]}
    return Section("4. Memory", body, goals, data)
